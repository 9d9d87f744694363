using System.Diagnostics;
using Memcr.Engine;
using Memcr.Linux.Memory;

namespace Memcr.Service;

/// <summary>
/// Gives the service's memory back to the kernel once it has had nothing to do for a moment, in
/// two passes (the second once the threads busy until the first have gone back to sleep). It runs
/// on a thread of its own: after a pass, all that runs is this thread going back to its wait, so
/// that few of the code pages the trim unmapped are faulted in again (each fault maps 64 KiB
/// around it), where a timer callback would return through the thread pool's dispatch loop.
/// </summary>
internal sealed class IdleTrimmer : IDisposable
{
    private static readonly TimeSpan FirstPass = TimeSpan.FromMilliseconds(250);
    private static readonly TimeSpan SecondPass = TimeSpan.FromMilliseconds(500);

    private readonly object _sync = new();
    private readonly Func<bool> _idle;
    private readonly Log _log;
    private long _due = long.MaxValue;
    private int _passes;
    private bool _disposed;

    public IdleTrimmer(Func<bool> idle, Log log)
    {
        _idle = idle;
        _log = log;
        new Thread(Run) { Name = "memcr trim", IsBackground = true }.Start();
    }

    /// <summary>Puts the trim off: it comes once nothing has called this for a moment.</summary>
    public void Schedule()
    {
        lock (_sync)
        {
            _passes = 0;
            _due = Stopwatch.GetTimestamp() + (long)(FirstPass.TotalSeconds * Stopwatch.Frequency);
            Monitor.Pulse(_sync);
        }
    }

    private void Run()
    {
        while (WaitUntilDue())
        {
            if (!_idle())
                continue; // an operation holds buffers: the answer that ends it schedules again
            MemoryTrim.Now();
            if (_log.DebugEnabled)
                _log.Debug($"idle: memory given back, RSS {Environment.WorkingSet >> 10} kB");
        }
    }

    /// <summary>Blocks until a pass is due and sets the next one up; false once disposed.</summary>
    private bool WaitUntilDue()
    {
        lock (_sync)
        {
            while (!_disposed)
            {
                long left = _due - Stopwatch.GetTimestamp();
                if (_due == long.MaxValue)
                {
                    Monitor.Wait(_sync);
                }
                else if (left > 0)
                {
                    Monitor.Wait(_sync, TimeSpan.FromSeconds((double)left / Stopwatch.Frequency));
                }
                else
                {
                    _due = ++_passes < 2 ? Stopwatch.GetTimestamp() + (long)(SecondPass.TotalSeconds * Stopwatch.Frequency) : long.MaxValue;
                    return true;
                }
            }
            return false;
        }
    }

    public void Dispose()
    {
        lock (_sync)
        {
            _disposed = true;
            Monitor.Pulse(_sync);
        }
    }
}
