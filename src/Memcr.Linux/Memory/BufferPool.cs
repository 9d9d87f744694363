using System.Collections.Concurrent;

namespace Memcr.Linux.Memory;

/// <summary>
/// Page-aligned I/O buffers of one size, at most <c>count</c> of them, made when first needed.
/// They are slots of one mapping of huge pages (<see cref="IoMemory"/>), so that buffers smaller
/// than a huge page (the 1 MiB reads of a lazy restore's fill) are made of huge pages too, and
/// each slot is populated when first taken. A memcr service shares one pool among all its
/// checkpoints, so that checkpointing many processes at once needs a bounded amount of memory
/// rather than buffers for each of them.
/// </summary>
public sealed class BufferPool : IDisposable
{
    private readonly BlockingCollection<AlignedBuffer> _free;
    private readonly nint _slots;
    private readonly long _stride;
    private readonly long _bytes;
    private int _made;

    public BufferPool(int count, int size)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(count);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(size);
        Count = count;
        Size = size;
        _stride = IoMemory.RoundUp(size, Environment.SystemPageSize);
        _bytes = _stride * count;
        _slots = IoMemory.Map(_bytes);
        _free = new BlockingCollection<AlignedBuffer>(count);
    }

    public int Size { get; }

    public int Count { get; }

    /// <summary>A buffer, waiting for one to be returned when all are in use.</summary>
    public AlignedBuffer Take(CancellationToken cancel)
    {
        if (_free.TryTake(out var buffer))
            return buffer;
        int slot = Interlocked.Increment(ref _made) - 1;
        if (slot < Count)
        {
            nint at = _slots + (nint)(slot * _stride);
            IoMemory.Populate(at, _stride);
            return new AlignedBuffer(at, Size);
        }
        Interlocked.Decrement(ref _made);
        return _free.Take(cancel);
    }

    public void Return(AlignedBuffer buffer) => _free.Add(buffer);

    /// <summary>A lease for one user: whatever it still holds when disposed goes back to the pool.</summary>
    public Lease Borrow() => new(this);

    public void Dispose()
    {
        Interop.Libc.munmap(_slots, (nuint)_bytes);
        _free.Dispose();
    }

    /// <summary>Buffers taken by one checkpoint; any it did not give back are returned on dispose (failures, cancellation).</summary>
    public sealed class Lease(BufferPool pool) : IDisposable
    {
        private readonly ConcurrentDictionary<AlignedBuffer, byte> _held = new();

        public AlignedBuffer Take(CancellationToken cancel)
        {
            var b = pool.Take(cancel);
            _held[b] = 0;
            return b;
        }

        public void Return(AlignedBuffer buffer)
        {
            if (_held.TryRemove(buffer, out _))
                pool.Return(buffer);
        }

        public void Dispose()
        {
            foreach (var b in _held.Keys)
                Return(b);
        }
    }
}
