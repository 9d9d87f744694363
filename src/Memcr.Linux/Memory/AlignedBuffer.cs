using System.Buffers;
using System.Runtime.InteropServices;

namespace Memcr.Linux.Memory;

/// <summary>
/// Native memory aligned to a page, usable as <see cref="Memory{T}"/>: what O_DIRECT I/O and
/// process_vm_readv/writev batches read into and write from. Large buffers are mappings of their
/// own, so that disposing one gives its memory back to the kernel at once (malloc would keep
/// freed megabytes in its arenas, and memcr's RSS with them). Mapped buffers are populated at
/// once: every buffer is written soon after it is made, and faulting it in page by page from the
/// threads of the pipeline cost more than the copying (perf showed the encoders' first writes into
/// fresh output buffers taking write-protect faults, each with a TLB shootdown to the other CPU).
/// </summary>
public sealed unsafe class AlignedBuffer : MemoryManager<byte>
{
    /// <summary>Buffers from this size up (and aligned to at most a page) are mapped.</summary>
    private const int MapFrom = 64 << 10;

    private byte* _pointer;
    private readonly bool _mapped;

    public AlignedBuffer(int length, int alignment = 4096)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(length);
        Length = length;
        _mapped = length >= MapFrom && alignment <= Environment.SystemPageSize;
        if (!_mapped)
        {
            _pointer = (byte*)NativeMemory.AlignedAlloc((nuint)length, (nuint)alignment);
            return;
        }
        nint p = Interop.Libc.mmap(0, (nuint)length, Interop.Libc.PROT_READ | Interop.Libc.PROT_WRITE,
            Interop.Libc.MAP_PRIVATE | Interop.Libc.MAP_ANONYMOUS | Interop.Libc.MAP_POPULATE, -1, 0);
        if (p == Interop.Libc.MAP_FAILED)
            throw new OutOfMemoryException($"cannot map a {length}-byte buffer: mmap: {SyscallException.Describe(Marshal.GetLastPInvokeError())}");
        _pointer = (byte*)p;
    }

    public int Length { get; }

    public nint Pointer => (nint)_pointer;

    public override Span<byte> GetSpan() => new(_pointer, Length);

    public override MemoryHandle Pin(int elementIndex = 0) => new(_pointer + elementIndex);

    public override void Unpin()
    {
    }

    protected override void Dispose(bool disposing)
    {
        if (_pointer == null)
            return;
        if (_mapped)
            Interop.Libc.munmap((nint)_pointer, (nuint)Length);
        else
            NativeMemory.AlignedFree(_pointer);
        _pointer = null;
    }
}
