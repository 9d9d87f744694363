using System.Buffers.Binary;
using System.Globalization;
using Google.Protobuf;
using Memcr.CriuImages;
using Memcr.Dump.Arch;
using Memcr.Linux.Kernel;
using Memcr.Linux.Proc;
using Memcr.Linux.Ptrace;

namespace Memcr.Dump.Dumping;

/// <summary>
/// What core-TID.img holds: per thread its registers, FPU state, TLS, signal mask, pending
/// signals, alternate stack, robust list, tid address, rseq, scheduling and credentials; for the
/// process (in the leader's core) signal actions, itimers and POSIX timers, rlimits, shared
/// pending signals and the rest of task_core_entry. Read through ptrace, /proc, and remote
/// syscalls in the stopped threads.
/// </summary>
internal static class TaskDumper
{
    private const int RlimNlimits = 16;
    private const int PrGetPdeathsig = 2, PrGetDumpable = 3, PrGetSecurebits = 27, PrGetChildSubreaper = 37, PrGetTidAddress = 40, PrGetThpDisable = 42;
    private const int SigKill = 9, SigStop = 19, Signals = 64;
    private const ulong MembarrierGetRegistrations = 1 << 9;

    /// <summary>The thread's state that ptrace gives; read before any remote syscall changes its mask.</summary>
    public static (thread_info_x86 Info, ulong Mask) Registers(Tracer tracer, int tid)
    {
        var regs = new byte[X64ThreadState.RegsSize];
        tracer.GetRegisters(tid, regs);
        var xstate = new byte[X64ThreadState.XstateBufferSize];
        int n = tracer.GetRegisterSet(tid, X64ThreadState.NtX86Xstate, xstate);
        var info = new thread_info_x86
        {
            Gpregs = X64ThreadState.Registers(regs),
            Fpregs = X64ThreadState.FpRegs(xstate.AsSpan(0, n)),
        };
        var desc = new byte[16];
        for (int i = 0; i < X64ThreadState.TlsEntries; i++)
        {
            tracer.GetThreadArea(tid, X64ThreadState.TlsFirst + i, desc);
            info.Tls.Add(X64ThreadState.Tls(desc));
        }
        return (info, tracer.GetSignalMask(tid));
    }

    /// <summary>thread_core_entry of one thread; remote syscalls run in that thread.</summary>
    public static thread_core_entry ThreadCore(Tracer tracer, RemoteTask remote, int pid, int tid, ulong mask, bool leader, ulong secbits)
    {
        var stat = ProcStat.Read(pid, tid);
        var core = new thread_core_entry();
        var (head, length) = ProcessCalls.GetRobustList(tid);
        core.FutexRla = head;
        core.FutexRlaLen = (uint)length;
        core.SchedNice = stat.Nice;
        core.SchedPolicy = stat.Policy;
        if (stat.Policy is 1 or 2)
            core.SchedPrio = stat.RtPriority; // SCHED_FIFO, SCHED_RR
        if (!leader)
            core.BlkSigset = mask;

        ulong ss = remote.Reserve(24);
        remote.Call("sigaltstack", remote.Nr.Sigaltstack, 0, ss);
        var stack = remote.Read(ss, 24);
        core.Sas = new thread_sas_entry
        {
            SsSp = BinaryPrimitives.ReadUInt64LittleEndian(stack),
            SsFlags = BinaryPrimitives.ReadUInt32LittleEndian(stack.AsSpan(8)),
            SsSize = BinaryPrimitives.ReadUInt64LittleEndian(stack.AsSpan(16)),
        };
        ulong sig = remote.Reserve(8);
        remote.Call("prctl(PR_GET_PDEATHSIG)", remote.Nr.Prctl, PrGetPdeathsig, sig);
        uint pdeath = BinaryPrimitives.ReadUInt32LittleEndian(remote.Read(sig, 4));
        if (pdeath != 0)
            core.PdeathSig = pdeath;

        core.SignalsP = Queue(tracer.PeekSignals(tid, shared: false));
        core.Creds = Creds(ProcFs.ReadTaskStatus(pid, tid), secbits);
        core.Comm = ProcFs.ReadText(pid, $"task/{tid}/comm").TrimEnd('\n');
        if (tracer.GetRseq(tid) is { } rseq)
        {
            core.RseqEntry = new rseq_entry { RseqAbiPointer = rseq.Address, RseqAbiSize = rseq.Size, Signature = rseq.Signature };
            // struct rseq's rseq_cs (offset 8): set while the thread is inside a critical section.
            ulong cs = BinaryPrimitives.ReadUInt64LittleEndian(remote.Read(rseq.Address + 8, 8));
            if (cs != 0)
                core.RseqEntry.RseqCsPointer = cs;
        }
        core.CgSet = 1;
        return core;
    }

    /// <summary>clear_child_tid of the thread: only the thread itself can ask (PR_GET_TID_ADDRESS).</summary>
    public static ulong TidAddress(RemoteTask remote)
    {
        ulong at = remote.Reserve(8);
        remote.Call("prctl(PR_GET_TID_ADDRESS)", remote.Nr.Prctl, PrGetTidAddress, at);
        return BinaryPrimitives.ReadUInt64LittleEndian(remote.Read(at, 8));
    }

    public static ulong SecureBits(RemoteTask remote) => (ulong)remote.Call("prctl(PR_GET_SECUREBITS)", remote.Nr.Prctl, PrGetSecurebits);

    /// <summary>task_core_entry: what belongs to the whole process; remote syscalls run in the leader.</summary>
    public static task_core_entry TaskCore(Tracer tracer, RemoteTask remote, int pid, ProcStat stat, ulong mask, bool stopped)
    {
        var tc = new task_core_entry
        {
            TaskState = stopped ? 6u : 1u, // TASK_STOPPED, TASK_ALIVE
            ExitCode = 0,
            Personality = Convert.ToUInt32(ProcFs.ReadText(pid, "personality").Trim(), 16),
            Flags = stat.Flags,
            BlkSigset = mask,
            Comm = ProcFs.ReadText(pid, "comm").TrimEnd('\n'),
            Timers = Timers(remote, pid),
            Rlimits = new task_rlimits_entry(),
            SignalsS = Queue(tracer.PeekSignals(tracer.Leader.Tid, shared: true)),
            Loginuid = uint.Parse(ProcFs.ReadText(pid, "loginuid").Trim(), CultureInfo.InvariantCulture),
            OomScoreAdj = int.Parse(ProcFs.ReadText(pid, "oom_score_adj").Trim(), CultureInfo.InvariantCulture),
        };
        if (stopped)
            tc.StopSigno = SigStop;
        var limits = ProcFs.ReadLimits(pid);
        if (limits.Count < RlimNlimits)
            throw new CriuModeException($"/proc/{pid}/limits lists {limits.Count} limits, not {RlimNlimits}");
        foreach (var (cur, max) in limits.Take(RlimNlimits))
            tc.Rlimits.Rlimits.Add(new rlimit_entry { Cur = cur, Max = max });
        ulong act = remote.Reserve(32);
        for (int sig = 1; sig <= Signals; sig++)
        {
            if (sig is SigKill or SigStop)
                continue;
            remote.Call($"rt_sigaction({sig})", remote.Nr.RtSigaction, (ulong)sig, 0, act, 8);
            var a = remote.Read(act, 32);
            tc.Sigactions.Add(new sa_entry
            {
                Sigaction = BinaryPrimitives.ReadUInt64LittleEndian(a),
                Flags = BinaryPrimitives.ReadUInt64LittleEndian(a.AsSpan(8)),
                Restorer = BinaryPrimitives.ReadUInt64LittleEndian(a.AsSpan(16)),
                Mask = BinaryPrimitives.ReadUInt64LittleEndian(a.AsSpan(24)),
                CompatSigaction = false,
            });
        }
        ulong v = remote.Reserve(8);
        remote.Call("prctl(PR_GET_CHILD_SUBREAPER)", remote.Nr.Prctl, PrGetChildSubreaper, v);
        if (BinaryPrimitives.ReadInt32LittleEndian(remote.Read(v, 4)) != 0)
            tc.ChildSubreaper = true;
        // MEMBARRIER_CMD_GET_REGISTRATIONS (Linux 6.3+): the runtimes that use membarrier (.NET)
        // fail without the registrations they made.
        long registrations = remote.Raw(remote.Nr.Membarrier, MembarrierGetRegistrations, 0, 0);
        if (registrations > 0)
            tc.MembarrierRegistrationMask = (uint)registrations;
        return tc;
    }

    public static int Dumpable(RemoteTask remote) => (int)remote.Call("prctl(PR_GET_DUMPABLE)", remote.Nr.Prctl, PrGetDumpable);

    public static bool ThpDisabled(RemoteTask remote) => remote.Call("prctl(PR_GET_THP_DISABLE)", remote.Nr.Prctl, PrGetThpDisable) != 0;

    public static ulong Brk(RemoteTask remote) => (ulong)remote.Call("brk", remote.Nr.Brk, 0);

    private static task_timers_entry Timers(RemoteTask remote, int pid)
    {
        ulong buf = remote.Reserve(32);
        itimer_entry Itimer(int which)
        {
            remote.Call($"getitimer({which})", remote.Nr.Getitimer, (ulong)which, buf);
            var t = remote.Read(buf, 32);
            return new itimer_entry
            {
                Isec = BinaryPrimitives.ReadUInt64LittleEndian(t),
                Iusec = BinaryPrimitives.ReadUInt64LittleEndian(t.AsSpan(8)),
                Vsec = BinaryPrimitives.ReadUInt64LittleEndian(t.AsSpan(16)),
                Vusec = BinaryPrimitives.ReadUInt64LittleEndian(t.AsSpan(24)),
            };
        }
        var timers = new task_timers_entry { Real = Itimer(0), Virt = Itimer(1), Prof = Itimer(2) };
        foreach (var p in ProcFs.ReadTimers(pid))
        {
            remote.Call($"timer_gettime({p.Id})", remote.Nr.TimerGettime, (ulong)p.Id, buf);
            var t = remote.Read(buf, 32);
            long overrun = remote.Call($"timer_getoverrun({p.Id})", remote.Nr.TimerGetoverrun, (ulong)p.Id);
            var e = new posix_timer_entry
            {
                ItId = (uint)p.Id,
                ClockId = (uint)p.ClockId,
                SiSigno = (uint)p.Signal,
                ItSigevNotify = p.Notify switch { "none" => 1u, "thread" => 4u, _ => 0u }, // SIGEV_NONE, SIGEV_THREAD_ID, SIGEV_SIGNAL
                SivalPtr = p.SivalPtr,
                Overrun = (uint)overrun,
                Isec = BinaryPrimitives.ReadUInt64LittleEndian(t),
                Insec = BinaryPrimitives.ReadUInt64LittleEndian(t.AsSpan(8)),
                Vsec = BinaryPrimitives.ReadUInt64LittleEndian(t.AsSpan(16)),
                Vnsec = BinaryPrimitives.ReadUInt64LittleEndian(t.AsSpan(24)),
            };
            if (p.Notify == "thread")
                e.NotifyThreadId = p.NotifyId;
            timers.Posix.Add(e);
        }
        return timers;
    }

    private static signal_queue_entry Queue(List<byte[]> signals)
    {
        var q = new signal_queue_entry();
        foreach (var s in signals)
            q.Signals.Add(new siginfo_entry { Siginfo = ByteString.CopyFrom(s) });
        return q;
    }

    public static creds_entry Creds(ProcStatus s, ulong secbits)
    {
        var c = new creds_entry
        {
            Uid = s.Uid[0], Euid = s.Uid[1], Suid = s.Uid[2], Fsuid = s.Uid[3],
            Gid = s.Gid[0], Egid = s.Gid[1], Sgid = s.Gid[2], Fsgid = s.Gid[3],
            Secbits = (uint)secbits,
        };
        c.CapInh.AddRange(Words(s.CapInh));
        c.CapPrm.AddRange(Words(s.CapPrm));
        c.CapEff.AddRange(Words(s.CapEff));
        c.CapBnd.AddRange(Words(s.CapBnd));
        c.CapAmb.AddRange(Words(s.CapAmb));
        c.Groups.AddRange(s.Groups);
        if (s.NoNewPrivs != 0)
            c.NoNewPrivs = s.NoNewPrivs;
        return c;
    }

    private static uint[] Words(ulong caps) => [(uint)caps, (uint)(caps >> 32)];
}
