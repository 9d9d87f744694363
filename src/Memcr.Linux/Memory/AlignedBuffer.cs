using System.Buffers;
using System.Runtime.InteropServices;

namespace Memcr.Linux.Memory;

/// <summary>
/// Native memory aligned to a page, usable as <see cref="Memory{T}"/>: what O_DIRECT I/O and
/// process_vm_readv/writev batches read into and write from.
/// </summary>
public sealed unsafe class AlignedBuffer : MemoryManager<byte>
{
    private byte* _pointer;

    public AlignedBuffer(int length, int alignment = 4096)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(length);
        _pointer = (byte*)NativeMemory.AlignedAlloc((nuint)length, (nuint)alignment);
        Length = length;
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
        if (_pointer != null)
        {
            NativeMemory.AlignedFree(_pointer);
            _pointer = null;
        }
    }
}
