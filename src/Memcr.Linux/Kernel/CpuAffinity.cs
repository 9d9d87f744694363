using Memcr.Linux.Proc;

namespace Memcr.Linux.Kernel;

/// <summary>
/// Keeps the calling thread and one traced thread on the same CPU while remote syscalls run. Each
/// remote syscall is two ptrace round trips; across two CPUs every one is a cross-CPU wake-up
/// (under a hypervisor about 90 µs, seven times the cost on one CPU), and the scheduler wakes a
/// tracee on the idle CPU rather than on its tracer's busy one unless both are pinned. The traced
/// thread gets its own affinity back on dispose.
/// </summary>
public sealed class CpuAffinity : IDisposable
{
    private const int MaskWords = 16;
    private readonly int _tid;
    private readonly ulong[] _ours;
    private readonly ulong[] _theirs;
    private bool _disposed;

    private CpuAffinity(int tid, ulong[] ours, ulong[] theirs)
    {
        _tid = tid;
        _ours = ours;
        _theirs = theirs;
    }

    /// <summary>
    /// Puts the calling thread and thread <paramref name="tid"/> of <paramref name="pid"/> on the
    /// CPU that thread last ran on, until disposed; null when that cannot be done (a CPU outside
    /// our cpuset, the thread gone), which only costs time.
    /// </summary>
    public static CpuAffinity? Follow(int pid, int tid)
    {
        int cpu;
        try
        {
            cpu = ProcStat.Read(pid, tid).Processor;
        }
        catch (Exception e) when (e is IOException or ProcessGoneException or FormatException)
        {
            return null;
        }
        var ours = new ulong[MaskWords];
        var theirs = new ulong[MaskWords];
        if (cpu < 0 || cpu >= MaskWords * 64 || !Get(0, ours) || !Get(tid, theirs) || (ours[cpu / 64] & (1UL << (cpu % 64))) == 0)
            return null;
        var one = new ulong[MaskWords];
        one[cpu / 64] = 1UL << (cpu % 64);
        if (!Set(0, one))
            return null;
        if (!Set(tid, one))
        {
            Set(0, ours);
            return null;
        }
        return new CpuAffinity(tid, ours, theirs);
    }

    /// <summary>The calling thread's CPU mask, to be given to threads made while it was pinned; null if it cannot be read.</summary>
    public static ulong[]? OfCallingThread()
    {
        var mask = new ulong[MaskWords];
        return Get(0, mask) ? mask : null;
    }

    /// <summary>
    /// Gives thread <paramref name="tid"/> the CPU mask <paramref name="mask"/> (from
    /// <see cref="OfCallingThread"/>): a thread cloned while its parent was pinned inherited the pin.
    /// </summary>
    public static bool Reset(int tid, ulong[] mask) => Set(tid, mask);

    private static unsafe bool Get(int tid, ulong[] mask)
    {
        fixed (ulong* p = mask)
            return Interop.Libc.sched_getaffinity(tid, (nuint)(mask.Length * 8), p) >= 0;
    }

    private static unsafe bool Set(int tid, ulong[] mask)
    {
        fixed (ulong* p = mask)
            return Interop.Libc.sched_setaffinity(tid, (nuint)(mask.Length * 8), p) >= 0;
    }

    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        Set(_tid, _theirs);
        Set(0, _ours);
    }
}
