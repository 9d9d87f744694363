namespace Memcr.Linux.Memory;

/// <summary>
/// The bytes of I/O buffers that checkpoints and restores may hold at once (memcr --buffer-budget).
/// Each operation takes a <see cref="MemoryGrant"/> before it makes its buffers, sizes them to fit
/// it, and frees them when done; an operation that cannot get the least it needs waits, in the
/// order operations asked, rather than memory growing. A service shares one budget among all the
/// operations it runs.
/// </summary>
public sealed class MemoryBudget
{
    /// <summary>16 MiB: enough for a checkpoint or restore at full speed here (see README, Footprint).</summary>
    public const long DefaultBytes = 16L << 20;

    /// <summary>The least a budget may be: what the most demanding operation needs to run at all.</summary>
    public const long MinimumBytes = 8L << 20;

    private readonly object _lock = new(); // with Monitor.Wait: not a System.Threading.Lock
    /// <summary>Tickets of waiters that gave up (cancelled) before their turn came.</summary>
    private readonly HashSet<long> _abandoned = [];
    private long _free;
    private long _nextTicket;
    private long _serving;

    public MemoryBudget(long bytes = DefaultBytes)
    {
        if (bytes < MinimumBytes)
            throw new ArgumentOutOfRangeException(nameof(bytes), bytes, $"a buffer budget must be at least {MinimumBytes >> 20} MiB");
        Bytes = _free = bytes;
    }

    public long Bytes { get; }

    /// <summary>Bytes granted and not yet given back.</summary>
    public long InUse
    {
        get
        {
            lock (_lock)
                return Bytes - _free;
        }
    }

    /// <summary>
    /// At least <paramref name="least"/> bytes and at most <paramref name="wanted"/>: as much as is
    /// free once <paramref name="least"/> is, waiting behind operations that asked earlier.
    /// </summary>
    public MemoryGrant Acquire(long least, long wanted, CancellationToken cancel = default)
    {
        least = Math.Min(least, Bytes);
        wanted = Math.Clamp(wanted, least, Bytes);
        lock (_lock)
        {
            long ticket = _nextTicket++;
            try
            {
                using var wake = cancel.Register(() =>
                {
                    lock (_lock)
                        Monitor.PulseAll(_lock);
                });
                while (ticket != _serving || _free < least)
                {
                    cancel.ThrowIfCancellationRequested();
                    Monitor.Wait(_lock);
                }
            }
            catch
            {
                // A waiter that gives up must not hold up those behind it.
                if (ticket == _serving)
                    _serving++;
                else
                    _abandoned.Add(ticket);
                SkipAbandoned();
                Monitor.PulseAll(_lock);
                throw;
            }
            long bytes = Math.Min(wanted, _free);
            _free -= bytes;
            _serving++;
            SkipAbandoned();
            Monitor.PulseAll(_lock);
            return new MemoryGrant(this, bytes);
        }
    }

    private void SkipAbandoned()
    {
        while (_abandoned.Remove(_serving))
            _serving++;
    }

    internal void Release(long bytes)
    {
        lock (_lock)
        {
            _free += bytes;
            Monitor.PulseAll(_lock);
        }
    }
}

/// <summary>Bytes of a <see cref="MemoryBudget"/> held by one operation until disposed.</summary>
public sealed class MemoryGrant : IDisposable
{
    private MemoryBudget? _budget;

    internal MemoryGrant(MemoryBudget budget, long bytes)
    {
        _budget = budget;
        Bytes = bytes;
    }

    public long Bytes { get; }

    public void Dispose()
    {
        Interlocked.Exchange(ref _budget, null)?.Release(Bytes);
    }
}
