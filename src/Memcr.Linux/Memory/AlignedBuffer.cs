using System.Buffers;
using System.Runtime.InteropServices;

namespace Memcr.Linux.Memory;

/// <summary>
/// Native memory aligned to a page, usable as <see cref="Memory{T}"/>: what O_DIRECT I/O and
/// process_vm_readv/writev batches read into and write from. Large buffers are mappings of their
/// own, so that disposing one gives its memory back to the kernel at once (malloc would keep
/// freed megabytes in its arenas, and memcr's RSS with them), populated at once and made of huge
/// pages where a whole one fits and the kernel has them (<see cref="IoMemory"/>). A buffer can
/// also be a view of memory someone else owns (a slot of a <see cref="BufferPool"/>).
/// </summary>
public sealed unsafe class AlignedBuffer : MemoryManager<byte>
{
    /// <summary>Buffers from this size up (and aligned to at most a page) are mapped.</summary>
    private const int MapFrom = 64 << 10;

    private enum Owner { Malloc, Mapping, Nobody }

    private byte* _pointer;
    private readonly Owner _owner;

    public AlignedBuffer(int length, int alignment = 4096)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(length);
        Length = length;
        if (length < MapFrom || alignment > Environment.SystemPageSize)
        {
            _owner = Owner.Malloc;
            _pointer = (byte*)NativeMemory.AlignedAlloc((nuint)length, (nuint)alignment);
            return;
        }
        _owner = Owner.Mapping;
        _pointer = (byte*)IoMemory.Map(length);
        IoMemory.Populate((nint)_pointer, length);
    }

    /// <summary>A view of <paramref name="length"/> bytes at <paramref name="pointer"/>, which its owner frees: disposing the view does nothing.</summary>
    internal AlignedBuffer(nint pointer, int length)
    {
        Length = length;
        _pointer = (byte*)pointer;
        _owner = Owner.Nobody;
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
        switch (_owner)
        {
            case Owner.Malloc:
                NativeMemory.AlignedFree(_pointer);
                break;
            case Owner.Mapping:
                Interop.Libc.munmap((nint)_pointer, (nuint)Length);
                break;
        }
        _pointer = null;
    }
}
