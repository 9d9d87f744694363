using Memcr.Linux.Proc;

namespace Memcr.Linux.Ptrace;

public enum TraceState
{
    /// <summary>Seized, interrupt requested, stop not seen yet.</summary>
    Running,

    /// <summary>In a ptrace stop inside get_signal (PTRACE_EVENT_STOP: interrupt or group stop).</summary>
    Stopped,

    /// <summary>In a syscall-enter or syscall-exit stop (while executing a remote syscall).</summary>
    SyscallStop,

    Gone,
}

/// <summary>ptrace options beyond those every tracer sets (PTRACE_O_TRACECLONE, PTRACE_O_TRACESYSGOOD).</summary>
[Flags]
public enum PtraceOptions
{
    None = 0,

    /// <summary>Processes the tracee forks (clone3 without CLONE_THREAD included) are attached to us too.</summary>
    TraceFork = 2,

    /// <summary>Should we die, the kernel kills the tracee: a half-restored process never runs.</summary>
    ExitKill = 0x100000,
}

public sealed class TracedThread(int tid)
{
    public int Tid { get; } = tid;

    public TraceState State { get; internal set; } = TraceState.Running;

    /// <summary>SIGTRAP for an interrupt stop, the stop signal for a group stop.</summary>
    public int StopSignal { get; internal set; }

    public WaitStatus? ExitStatus { get; internal set; }
}

/// <summary>
/// Holds every thread of one process in a ptrace stop. All calls must come from the thread that
/// created it: the kernel makes the tracer *thread*, not process, the tracer.
/// </summary>
public sealed class Tracer : IDisposable
{
    private const int SyscallTrap = Signals.SIGTRAP | 0x80;

    private readonly Dictionary<int, TracedThread> _threads = [];
    private readonly int _ownerThread = Environment.CurrentManagedThreadId;
    private readonly Action<string> _log;
    private PtraceOptions _options;
    private bool _holding;
    private bool _detached;

    private Tracer(int pid, Action<string> log)
    {
        Pid = pid;
        _log = log;
    }

    public int Pid { get; }

    /// <summary>The process was already group-stopped (SIGSTOP) when we seized it.</summary>
    public bool WasGroupStopped { get; private set; }

    public IReadOnlyCollection<TracedThread> Threads => _threads.Values;

    public TracedThread Leader => _threads.TryGetValue(Pid, out var t) && t.State != TraceState.Gone
        ? t
        : _threads.Values.First(t => t.State != TraceState.Gone);

    public bool IsAlive => _threads.Values.Any(t => t.State != TraceState.Gone);

    /// <summary>
    /// Seizes and interrupts every thread of <paramref name="pid"/>, including threads created while
    /// we do so, and returns once all of them are stopped. Signals met on the way are delivered, not
    /// dropped. On failure every thread seized so far is released.
    /// </summary>
    public static Tracer Seize(int pid, Action<string> log, PtraceOptions options = PtraceOptions.None)
    {
        var status = ProcFs.ReadStatus(pid);
        var tracer = new Tracer(pid, log) { WasGroupStopped = status.State == 'T', _options = options };
        try
        {
            // A clone that was already under way when its parent was seized creates a thread that
            // is neither auto-attached nor reported, and a thread exiting while /proc/PID/task is
            // read can hide another from that listing: we are done only when a listing taken with
            // every known thread stopped shows no thread we do not hold.
            for (int round = 0; ; round++)
            {
                tracer.SeizeNewThreads();
                tracer.WaitUntilAllStopped();
                if (!tracer.IsAlive)
                    throw new ProcessGoneException(pid, $"pid {pid} exited while it was being frozen");
                if (tracer.UnfrozenThread() is not { } tid)
                    return tracer;
                if (round == 1000)
                    throw new InvalidOperationException($"tid {tid} of pid {pid} escapes freezing: the process creates threads faster than they can be seized");
            }
        }
        catch
        {
            tracer.Detach();
            throw;
        }
    }

    /// <summary>
    /// Takes over a process that a remote clone3 in a traced process has just made: the kernel
    /// attached it to us (PTRACE_O_TRACEFORK) and it starts in a PTRACE_EVENT_STOP, having run none
    /// of its code. Returns once that stop is seen.
    /// </summary>
    public static Tracer Adopt(int pid, Action<string> log)
    {
        var tracer = new Tracer(pid, log);
        tracer._threads[pid] = new TracedThread(pid);
        tracer.WaitUntilAllStopped();
        if (!tracer.IsAlive)
            throw new ProcessGoneException(pid, $"new process {pid} died before its first stop");
        return tracer;
    }

    /// <summary>Takes over a thread a remote clone3(CLONE_THREAD) of ours has made in this process (auto-attached, stopped on arrival).</summary>
    public TracedThread AddThread(int tid)
    {
        if (!_threads.TryGetValue(tid, out var thread))
            _threads[tid] = thread = new TracedThread(tid);
        if (thread.State == TraceState.Running)
            WaitUntilAllStopped();
        if (thread.State == TraceState.Gone)
            throw new ProcessGoneException(Pid, $"new thread {tid} of pid {Pid} died before its first stop");
        return thread;
    }

    /// <summary>A thread the kernel lists for the process that we do not hold stopped, if any.</summary>
    public int? UnfrozenThread()
    {
        foreach (int tid in ProcFs.ReadTasks(Pid))
        {
            if (!_threads.TryGetValue(tid, out var t) || t.State is not (TraceState.Stopped or TraceState.SyscallStop))
                return tid;
        }
        return null;
    }

    private void SeizeNewThreads()
    {
        var tids = ProcFs.ReadTasks(Pid);
        if (tids.Count == 0 && _threads.Count == 0)
            throw new ProcessGoneException(Pid, $"pid {Pid}: no such process");
        // The leader first, so that a failure to seize is reported for the pid the user gave.
        tids.Sort((a, b) => a == Pid ? -1 : b == Pid ? 1 : a.CompareTo(b));
        foreach (int tid in tids)
        {
            if (_threads.ContainsKey(tid))
                continue;
            long r = Interop.Libc.ptrace(Interop.Libc.PTRACE_SEIZE, tid, 0,
                Interop.Libc.PTRACE_O_TRACECLONE | Interop.Libc.PTRACE_O_TRACESYSGOOD | (int)_options);
            if (r < 0)
            {
                int errno = Errno.Last;
                if (errno == Errno.ESRCH)
                    continue; // the thread exited since we listed it
                if (errno == Errno.EPERM)
                {
                    switch (Why(tid))
                    {
                        case Refusal.Exiting:
                            continue; // a thread that has exited is refused with EPERM, not ESRCH
                        case Refusal.Ours:
                            // Auto-attached as the child of a seized thread whose
                            // PTRACE_EVENT_CLONE we have not read yet: it stops on its own.
                            _threads[tid] = new TracedThread(tid);
                            continue;
                    }
                }
                throw SeizeError(tid, errno);
            }
            _threads[tid] = new TracedThread(tid);
            if (Interop.Libc.ptrace(Interop.Libc.PTRACE_INTERRUPT, tid, 0, 0) < 0 && Errno.Last != Errno.ESRCH)
                throw Errno.Error("ptrace(PTRACE_INTERRUPT)", $"tid {tid} of pid {Pid}");
        }
    }

    private enum Refusal
    {
        Other,
        Exiting,
        Ours,
    }

    private Refusal Why(int tid)
    {
        try
        {
            var status = ProcFs.ReadTaskStatus(Pid, tid);
            if (status.State is 'Z' or 'X')
                return Refusal.Exiting;
            return status.TracerPid == Interop.Libc.gettid() ? Refusal.Ours : Refusal.Other;
        }
        catch (ProcessGoneException)
        {
            return Refusal.Exiting;
        }
    }

    private SyscallException SeizeError(int tid, int errno)
    {
        string what = tid == Pid ? $"pid {Pid}" : $"tid {tid} of pid {Pid}";
        if (errno == Errno.EPERM)
        {
            int tracer = 0;
            try
            {
                tracer = ProcFs.ReadStatus(tid).TracerPid;
            }
            catch (ProcessGoneException)
            {
            }
            string hint = tracer != 0
                ? $"it is already traced by pid {tracer}"
                : "memcr needs root or CAP_SYS_PTRACE, and the target must not be protected";
            return new SyscallException("ptrace(PTRACE_SEIZE)", what, errno, hint);
        }
        return new SyscallException("ptrace(PTRACE_SEIZE)", what, errno);
    }

    private void WaitUntilAllStopped()
    {
        while (true)
        {
            var running = _threads.Values.FirstOrDefault(t => t.State == TraceState.Running);
            if (running is null)
                return;
            var status = Wait(running.Tid, noHang: false);
            if (status is { } s)
                HandleFreezeStop(running, s);
        }
    }

    /// <summary>Processes a stop of a thread that we want to see interrupted.</summary>
    private void HandleFreezeStop(TracedThread thread, WaitStatus status)
    {
        if (status.Gone)
        {
            MarkGone(thread, status);
            return;
        }
        if (!status.Stopped)
            return;
        switch (status.Event)
        {
            case Interop.Libc.PTRACE_EVENT_STOP:
                thread.State = TraceState.Stopped;
                thread.StopSignal = status.StopSignal;
                return;
            case Interop.Libc.PTRACE_EVENT_CLONE:
                int child = (int)GetEventMessage(thread.Tid);
                if (!_threads.ContainsKey(child))
                    _threads[child] = new TracedThread(child); // auto-attached, reports PTRACE_EVENT_STOP
                Continue(thread.Tid, 0);
                return;
            case 0 when status.StopSignal == SyscallTrap:
                Continue(thread.Tid, 0);
                return;
            case 0:
                // A signal-delivery-stop: the thread dequeued a signal before our interrupt took
                // effect. Deliver it now; the pending interrupt stops the thread again before it
                // returns to user space, so no code of the target runs.
                _log($"tid {thread.Tid}: delivering {Signals.Name(status.StopSignal)} before freezing");
                Continue(thread.Tid, status.StopSignal);
                return;
            default:
                Continue(thread.Tid, 0);
                return;
        }
    }

    private static void MarkGone(TracedThread thread, WaitStatus status)
    {
        thread.State = TraceState.Gone;
        thread.ExitStatus = status;
    }

    /// <summary>wait4 for one thread with __WALL; null when nothing happened (noHang) or it is not ours any more.</summary>
    public unsafe WaitStatus? Wait(int tid, bool noHang)
    {
        CheckOwner();
        while (true)
        {
            int raw;
            int r = Interop.Libc.wait4(tid, &raw, Interop.Libc.__WALL | (noHang ? Interop.Libc.WNOHANG : 0), 0);
            if (r > 0)
                return new WaitStatus(raw);
            if (r == 0)
                return null;
            int errno = Errno.Last;
            if (errno == Errno.EINTR)
                continue;
            if (errno == 10 /* ECHILD */)
            {
                if (_threads.TryGetValue(tid, out var t) && t.State != TraceState.Gone)
                    MarkGone(t, new WaitStatus(0));
                return null;
            }
            throw new SyscallException("wait4", $"tid {tid} of pid {Pid}", errno);
        }
    }

    /// <summary>Waits for the next stop of a thread and records exits.</summary>
    public WaitStatus WaitStop(int tid)
    {
        var thread = _threads[tid];
        var status = Wait(tid, noHang: false) ?? new WaitStatus(0);
        if (status.Gone)
        {
            MarkGone(thread, status);
            throw new ProcessGoneException(Pid, $"pid {Pid} {status} while frozen");
        }
        return status;
    }

    public void Continue(int tid, int signal) => Resume(Interop.Libc.PTRACE_CONT, tid, signal);

    public void ContinueToSyscall(int tid, int signal) => Resume(Interop.Libc.PTRACE_SYSCALL, tid, signal);

    private void Resume(int request, int tid, int signal)
    {
        CheckOwner();
        if (Interop.Libc.ptrace(request, tid, 0, signal) < 0)
        {
            int errno = Errno.Last;
            if (errno == Errno.ESRCH)
                return; // killed meanwhile: the next wait reports it
            throw new SyscallException(request == Interop.Libc.PTRACE_CONT ? "ptrace(PTRACE_CONT)" : "ptrace(PTRACE_SYSCALL)", $"tid {tid} of pid {Pid}", errno);
        }
        if (_threads.TryGetValue(tid, out var t) && t.State != TraceState.Gone)
            t.State = TraceState.Running;
    }

    public void Interrupt(int tid)
    {
        CheckOwner();
        if (Interop.Libc.ptrace(Interop.Libc.PTRACE_INTERRUPT, tid, 0, 0) < 0 && Errno.Last != Errno.ESRCH)
            throw Errno.Error("ptrace(PTRACE_INTERRUPT)", $"tid {tid} of pid {Pid}");
    }

    internal void SetState(int tid, TraceState state, int stopSignal = 0)
    {
        var t = _threads[tid];
        t.State = state;
        t.StopSignal = stopSignal;
    }

    public unsafe ulong GetEventMessage(int tid)
    {
        ulong msg;
        if (Interop.Libc.ptrace(Interop.Libc.PTRACE_GETEVENTMSG, tid, 0, (nint)(&msg)) < 0)
            throw Errno.Error("ptrace(PTRACE_GETEVENTMSG)", $"tid {tid} of pid {Pid}");
        return msg;
    }

    /// <summary>Reads the NT_PRSTATUS register set into <paramref name="regs"/>; returns its size.</summary>
    public unsafe int GetRegisters(int tid, Span<byte> regs)
    {
        CheckOwner();
        fixed (byte* p = regs)
        {
            var iov = new Interop.IoVec { Base = (nint)p, Length = (nuint)regs.Length };
            if (Interop.Libc.ptrace(Interop.Libc.PTRACE_GETREGSET, tid, Interop.Libc.NT_PRSTATUS, (nint)(&iov)) < 0)
                throw Errno.Error("ptrace(PTRACE_GETREGSET)", $"tid {tid} of pid {Pid}");
            return (int)iov.Length;
        }
    }

    public unsafe void SetRegisters(int tid, ReadOnlySpan<byte> regs)
    {
        CheckOwner();
        fixed (byte* p = regs)
        {
            var iov = new Interop.IoVec { Base = (nint)p, Length = (nuint)regs.Length };
            if (Interop.Libc.ptrace(Interop.Libc.PTRACE_SETREGSET, tid, Interop.Libc.NT_PRSTATUS, (nint)(&iov)) < 0)
                throw Errno.Error("ptrace(PTRACE_SETREGSET)", $"tid {tid} of pid {Pid}");
        }
    }

    /// <summary>Reads register set <paramref name="note"/> (NT_PRFPREG, NT_X86_XSTATE, ...); returns its size.</summary>
    public unsafe int GetRegisterSet(int tid, int note, Span<byte> into)
    {
        CheckOwner();
        fixed (byte* p = into)
        {
            var iov = new Interop.IoVec { Base = (nint)p, Length = (nuint)into.Length };
            if (Interop.Libc.ptrace(Interop.Libc.PTRACE_GETREGSET, tid, note, (nint)(&iov)) < 0)
                throw Errno.Error($"ptrace(PTRACE_GETREGSET, 0x{note:x})", $"tid {tid} of pid {Pid}");
            return (int)iov.Length;
        }
    }

    public unsafe void SetRegisterSet(int tid, int note, ReadOnlySpan<byte> regs)
    {
        CheckOwner();
        fixed (byte* p = regs)
        {
            var iov = new Interop.IoVec { Base = (nint)p, Length = (nuint)regs.Length };
            if (Interop.Libc.ptrace(Interop.Libc.PTRACE_SETREGSET, tid, note, (nint)(&iov)) < 0)
                throw Errno.Error($"ptrace(PTRACE_SETREGSET, 0x{note:x})", $"tid {tid} of pid {Pid}");
        }
    }

    /// <summary>The signals queued for a thread (or, with <paramref name="shared"/>, for the whole process), as 128-byte siginfo_t each, without dequeuing them.</summary>
    public unsafe List<byte[]> PeekSignals(int tid, bool shared)
    {
        CheckOwner();
        const int Chunk = 32;
        var all = new List<byte[]>();
        var buffer = new byte[Chunk * SigInfoSize];
        while (true)
        {
            var args = new PeekSigInfoArgs { Offset = (ulong)all.Count, Flags = shared ? (uint)Interop.Libc.PTRACE_PEEKSIGINFO_SHARED : 0, Count = Chunk };
            long n;
            fixed (byte* p = buffer)
                n = Interop.Libc.ptrace(Interop.Libc.PTRACE_PEEKSIGINFO, tid, (nint)(&args), (nint)p);
            if (n < 0)
                throw Errno.Error("ptrace(PTRACE_PEEKSIGINFO)", $"tid {tid} of pid {Pid}");
            for (int i = 0; i < n; i++)
                all.Add(buffer.AsSpan(i * SigInfoSize, SigInfoSize).ToArray());
            if (n < Chunk)
                return all;
        }
    }

    public const int SigInfoSize = 128;

    private struct PeekSigInfoArgs
    {
        public ulong Offset;
        public uint Flags;
        public int Count;
    }

    /// <summary>The thread's rseq registration (address, size, signature), or null when it has none.</summary>
    public unsafe (ulong Address, uint Size, uint Signature)? GetRseq(int tid)
    {
        CheckOwner();
        var conf = stackalloc ulong[3];
        long r = Interop.Libc.ptrace(Interop.Libc.PTRACE_GET_RSEQ_CONFIGURATION, tid, 24, (nint)conf);
        if (r < 0)
            throw Errno.Error("ptrace(PTRACE_GET_RSEQ_CONFIGURATION)", $"tid {tid} of pid {Pid}");
        if (conf[0] == 0)
            return null;
        return (conf[0], (uint)conf[1], (uint)(conf[1] >> 32));
    }

    /// <summary>x86: a GDT TLS entry (struct user_desc, 16 bytes) of a thread.</summary>
    public unsafe void GetThreadArea(int tid, int index, Span<byte> userDesc)
    {
        CheckOwner();
        fixed (byte* p = userDesc)
        {
            if (Interop.Libc.ptrace(Interop.Libc.PTRACE_GET_THREAD_AREA, tid, index, (nint)p) < 0)
                throw Errno.Error("ptrace(PTRACE_GET_THREAD_AREA)", $"tid {tid} of pid {Pid}");
        }
    }

    public unsafe void SetThreadArea(int tid, int index, ReadOnlySpan<byte> userDesc)
    {
        CheckOwner();
        fixed (byte* p = userDesc)
        {
            if (Interop.Libc.ptrace(Interop.Libc.PTRACE_SET_THREAD_AREA, tid, index, (nint)p) < 0)
                throw Errno.Error("ptrace(PTRACE_SET_THREAD_AREA)", $"tid {tid} of pid {Pid}");
        }
    }

    public unsafe ulong GetSignalMask(int tid)
    {
        CheckOwner();
        ulong mask;
        if (Interop.Libc.ptrace(Interop.Libc.PTRACE_GETSIGMASK, tid, sizeof(ulong), (nint)(&mask)) < 0)
            throw Errno.Error("ptrace(PTRACE_GETSIGMASK)", $"tid {tid} of pid {Pid}");
        return mask;
    }

    public unsafe void SetSignalMask(int tid, ulong mask)
    {
        CheckOwner();
        if (Interop.Libc.ptrace(Interop.Libc.PTRACE_SETSIGMASK, tid, sizeof(ulong), (nint)(&mask)) < 0)
            throw Errno.Error("ptrace(PTRACE_SETSIGMASK)", $"tid {tid} of pid {Pid}");
    }

    /// <summary>
    /// Puts the whole process into a group stop (as SIGSTOP does) while we keep every thread in a
    /// ptrace stop. Should we die, the kernel detaches the threads and they stay stopped instead of
    /// running on dropped memory (kernel/ptrace.c: __ptrace_unlink reinstates a group stop in effect).
    /// </summary>
    public void HoldInGroupStop()
    {
        if (WasGroupStopped || _holding)
            return;
        if (Interop.Libc.kill(Pid, Signals.SIGSTOP) < 0)
            throw Errno.Error("kill(SIGSTOP)", $"pid {Pid}");
        _holding = true;
        var leader = Leader;
        // Let one thread take the SIGSTOP, with everything else blocked so that it cannot take
        // another signal first; then make every other thread join the group stop.
        ulong mask = GetSignalMask(leader.Tid);
        SetSignalMask(leader.Tid, ~0UL);
        try
        {
            DeliverOne(leader, Signals.SIGSTOP);
        }
        finally
        {
            SetSignalMask(leader.Tid, mask);
        }
        foreach (var t in _threads.Values.Where(t => t.State == TraceState.Stopped && t != leader).ToList())
        {
            Continue(t.Tid, 0);
            WaitForEventStop(t);
        }
    }

    /// <summary>
    /// Makes a group stop that was already in effect when the process was seized ours: another
    /// memcr put it there and died. <see cref="ReleaseGroupStop"/> will end it.
    /// </summary>
    public void TakeOverGroupStop()
    {
        if (!WasGroupStopped)
            throw new InvalidOperationException($"pid {Pid} was not in a group stop when seized");
        _holding = true;
    }

    /// <summary>Ends the group stop started by <see cref="HoldInGroupStop"/> (SIGCONT, as `kill -CONT`).</summary>
    public void ReleaseGroupStop()
    {
        if (!_holding)
            return;
        _holding = false;
        if (Interop.Libc.kill(Pid, Signals.SIGCONT) < 0 && Errno.Last != Errno.ESRCH)
            throw Errno.Error("kill(SIGCONT)", $"pid {Pid}");
    }

    /// <summary>Resumes a stopped thread until it dequeues <paramref name="signal"/>, and delivers it.</summary>
    private void DeliverOne(TracedThread thread, int signal)
    {
        Continue(thread.Tid, 0);
        for (int attempts = 0; attempts < 64; attempts++)
        {
            var s = WaitStop(thread.Tid);
            if (s.Event == 0 && s.StopSignal == signal)
            {
                Continue(thread.Tid, signal);
                WaitForEventStop(thread);
                return;
            }
            if (s.Event == 0 && s.StopSignal != SyscallTrap)
            {
                Continue(thread.Tid, s.StopSignal);
                continue;
            }
            Continue(thread.Tid, 0);
        }
        throw new InvalidOperationException($"tid {thread.Tid} of pid {Pid} did not take {Signals.Name(signal)}");
    }

    /// <summary>Waits until a resumed thread is back in a PTRACE_EVENT_STOP, delivering signals met.</summary>
    public void WaitForEventStop(TracedThread thread)
    {
        while (true)
        {
            var s = WaitStop(thread.Tid);
            if (s.Event == Interop.Libc.PTRACE_EVENT_STOP)
            {
                thread.State = TraceState.Stopped;
                thread.StopSignal = s.StopSignal;
                return;
            }
            Continue(thread.Tid, s.Event == 0 && s.StopSignal != SyscallTrap ? s.StopSignal : 0);
        }
    }

    /// <summary>
    /// Lets the process die of a pending signal whose action is to terminate it, without any of its
    /// code running: one thread is resumed with every other signal blocked, takes the signal in
    /// get_signal and the kernel ends the whole thread group. Returns true if it died.
    /// </summary>
    public bool DieOfPendingSignal(int tid, int signal)
    {
        SetSignalMask(tid, ~Signals.Bit(signal));
        Continue(tid, 0);
        for (int attempts = 0; attempts < 64; attempts++)
        {
            var s = Wait(tid, noHang: false);
            if (s is null || s.Value.Gone)
                break;
            if (s.Value.Event == 0 && s.Value.StopSignal == signal)
            {
                Continue(tid, signal);
                break;
            }
            Continue(tid, 0);
        }
        WaitAllGone();
        return !IsAlive;
    }

    /// <summary>
    /// Reaps every thread of a dying process. The leader is waited for last: the kernel reports its
    /// exit only once all other threads have been reaped (delay_group_leader).
    /// </summary>
    private void WaitAllGone()
    {
        foreach (var t in _threads.Values.Where(t => t.State != TraceState.Gone).OrderBy(t => t.Tid == Pid ? 1 : 0).ToList())
        {
            while (Wait(t.Tid, noHang: false) is { } s)
            {
                if (s.Gone)
                {
                    MarkGone(t, s);
                    break;
                }
                // Still stopping on its way out (a SIGKILL wakes it): let it go on.
                Resume(Interop.Libc.PTRACE_CONT, t.Tid, 0);
            }
            if (t.State != TraceState.Gone)
                t.State = TraceState.Gone;
        }
    }

    /// <summary>Collects exit statuses of threads that have ended; returns the leader's when the process has.</summary>
    public WaitStatus? ReapAll()
    {
        foreach (var t in _threads.Values.Where(t => t.State != TraceState.Gone).ToList())
        {
            var s = Wait(t.Tid, noHang: true);
            if (s is { Gone: true })
                MarkGone(t, s.Value);
        }
        if (IsAlive)
            return null;
        return _threads.TryGetValue(Pid, out var leader) ? leader.ExitStatus : _threads.Values.First().ExitStatus;
    }

    /// <summary>Releases every thread; pending signals are then delivered by the kernel as usual.</summary>
    public void Detach()
    {
        if (_detached)
            return;
        _detached = true;
        try
        {
            WaitUntilAllStopped();
        }
        catch (ProcessGoneException)
        {
        }
        ReleaseGroupStop();
        foreach (var t in _threads.Values)
        {
            if (t.State == TraceState.Gone)
                continue;
            if (Interop.Libc.ptrace(Interop.Libc.PTRACE_DETACH, t.Tid, 0, 0) < 0 && Errno.Last != Errno.ESRCH)
                throw Errno.Error("ptrace(PTRACE_DETACH)", $"tid {t.Tid} of pid {Pid}");
        }
    }

    /// <summary>Releases every thread at once, exactly where it is stopped (the restored process starts running).</summary>
    public void Release()
    {
        if (_detached)
            return;
        _detached = true;
        foreach (var t in _threads.Values.Where(t => t.State != TraceState.Gone))
        {
            if (Interop.Libc.ptrace(Interop.Libc.PTRACE_DETACH, t.Tid, 0, 0) < 0 && Errno.Last != Errno.ESRCH)
                throw Errno.Error("ptrace(PTRACE_DETACH)", $"tid {t.Tid} of pid {Pid}");
        }
    }

    /// <summary>Kills the process with SIGKILL (used only when its memory cannot be given back).</summary>
    public void Kill()
    {
        Interop.Libc.kill(Pid, Signals.SIGKILL);
        WaitAllGone();
        _detached = true;
    }

    private void CheckOwner()
    {
        if (Environment.CurrentManagedThreadId != _ownerThread)
            throw new InvalidOperationException("ptrace calls must come from the thread that seized the target");
    }

    public void Dispose() => Detach();
}
