using System.Collections.Concurrent;

namespace Memcr.Linux.Memory;

/// <summary>
/// Page-aligned I/O buffers of one size, at most <c>count</c> of them, made when first needed.
/// A memcr service shares one pool among all its checkpoints, so that checkpointing many
/// processes at once needs a bounded amount of memory rather than buffers for each of them.
/// </summary>
public sealed class BufferPool(int count, int size) : IDisposable
{
    private readonly BlockingCollection<AlignedBuffer> _free = new(count);
    private readonly ConcurrentBag<AlignedBuffer> _all = [];
    private int _made;

    public int Size { get; } = size;

    public int Count { get; } = count;

    /// <summary>A buffer, waiting for one to be returned when all are in use.</summary>
    public AlignedBuffer Take(CancellationToken cancel)
    {
        if (_free.TryTake(out var buffer))
            return buffer;
        if (Interlocked.Increment(ref _made) <= Count)
        {
            buffer = new AlignedBuffer(Size, Environment.SystemPageSize);
            _all.Add(buffer);
            return buffer;
        }
        Interlocked.Decrement(ref _made);
        return _free.Take(cancel);
    }

    public void Return(AlignedBuffer buffer) => _free.Add(buffer);

    /// <summary>A lease for one user: whatever it still holds when disposed goes back to the pool.</summary>
    public Lease Borrow() => new(this);

    public void Dispose()
    {
        foreach (var b in _all)
            ((IDisposable)b).Dispose();
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
