using System.Buffers.Binary;
using Memcr.CriuImages;
using Memcr.Dump.Arch;
using Memcr.Linux.Kernel;
using Memcr.Linux.Ptrace;

namespace Memcr.Dump.Restoring;

/// <summary>
/// The state of core-TID.img put back: for the process (by remote syscalls in its leader)
/// working and root directory, umask, rlimits, signal actions, itimers and POSIX timers,
/// personality and shared pending signals; per thread its name, alternate stack, tid address,
/// robust list, rseq, scheduling, parent-death signal, pending signals and credentials; and last,
/// through ptrace, its registers, FPU state, TLS and signal mask.
/// </summary>
internal static class TaskRestorer
{
    private const int SigKill = 9, SigStop = 19;
    private const int PrSetPdeathsig = 1, PrSetDumpable = 4, PrSetName = 15, PrSetChildSubreaper = 36, PrSetThpDisable = 41, PrSetSecurebits = 28;

    public static void Process(RestoreContext ctx, ProcessImages p, RemoteTask remote)
    {
        var tc = p.Leader.Tc ?? throw new CriuModeException($"core-{p.Pid}.img has no task core: it is not the core of a process leader");
        var cwd = ctx.Images.File(p.Fs.CwdId, $"pid {p.Pid}'s working directory").Reg.Name;
        var root = ctx.Images.File(p.Fs.RootId, $"pid {p.Pid}'s root directory").Reg.Name;
        if (root != "/")
            remote.Call($"chroot({root})", remote.Nr.Chroot, remote.PutString(root));
        remote.Call($"chdir({cwd})", remote.Nr.Chdir, remote.PutString(cwd));
        remote.ResetScratch();
        if (p.Fs.HasUmask)
            remote.Call("umask", remote.Nr.Umask, p.Fs.Umask);
        for (int r = 0; r < tc.Rlimits?.Rlimits.Count; r++)
            ProcessCalls.SetLimit(p.Pid, r, tc.Rlimits.Rlimits[r].Cur, tc.Rlimits.Rlimits[r].Max);

        ulong act = remote.Reserve(32);
        int i = 0;
        for (int sig = 1; sig <= 64 && i < tc.Sigactions.Count; sig++)
        {
            if (sig is SigKill or SigStop)
                continue;
            var sa = tc.Sigactions[i++];
            var a = new byte[32];
            BinaryPrimitives.WriteUInt64LittleEndian(a, sa.Sigaction);
            BinaryPrimitives.WriteUInt64LittleEndian(a.AsSpan(8), sa.Flags);
            BinaryPrimitives.WriteUInt64LittleEndian(a.AsSpan(16), sa.Restorer);
            BinaryPrimitives.WriteUInt64LittleEndian(a.AsSpan(24), sa.Mask);
            remote.Write(act, a);
            remote.Call($"rt_sigaction({sig})", remote.Nr.RtSigaction, (ulong)sig, act, 0, 8);
        }
        remote.ResetScratch();

        if (tc.Timers is { } timers)
        {
            SetItimer(remote, 0, timers.Real);
            SetItimer(remote, 1, timers.Virt);
            SetItimer(remote, 2, timers.Prof);
            foreach (var t in timers.Posix)
                PosixTimer(remote, p.Pid, t);
        }
        if (tc.Personality != 0)
            remote.Call("personality", remote.Nr.Personality, tc.Personality);
        if (p.Mm.HasDumpable)
            remote.Call("prctl(PR_SET_DUMPABLE)", remote.Nr.Prctl, PrSetDumpable, (ulong)p.Mm.Dumpable);
        if (p.Mm.ThpDisabled)
            remote.Call("prctl(PR_SET_THP_DISABLE)", remote.Nr.Prctl, PrSetThpDisable, 1, 0, 0, 0);
        if (tc.ChildSubreaper)
            remote.Call("prctl(PR_SET_CHILD_SUBREAPER)", remote.Nr.Prctl, PrSetChildSubreaper, 1);
        // Each bit of the mask is a MEMBARRIER_CMD_REGISTER_* command the process had made.
        for (int bit = 0; bit < 32; bit++)
        {
            if ((tc.MembarrierRegistrationMask & (1u << bit)) != 0)
                remote.Call($"membarrier(0x{1u << bit:x})", remote.Nr.Membarrier, 1UL << bit, 0, 0);
        }
        if (tc.HasOomScoreAdj)
            TryWrite($"/proc/{p.Pid}/oom_score_adj", tc.OomScoreAdj.ToString(System.Globalization.CultureInfo.InvariantCulture), ctx.Log);
        foreach (var s in tc.SignalsS?.Signals ?? [])
        {
            ulong info = remote.Put(s.Siginfo.Span);
            int signo = BinaryPrimitives.ReadInt32LittleEndian(s.Siginfo.Span);
            remote.Call($"rt_sigqueueinfo({signo})", remote.Nr.RtSigqueueinfo, (ulong)p.Pid, (ulong)signo, info);
            remote.ResetScratch();
        }
    }

    private static void SetItimer(RemoteTask remote, int which, itimer_entry? t)
    {
        if (t is null || (t.Isec | t.Iusec | t.Vsec | t.Vusec) == 0)
            return;
        var v = new byte[32];
        BinaryPrimitives.WriteUInt64LittleEndian(v, t.Isec);
        BinaryPrimitives.WriteUInt64LittleEndian(v.AsSpan(8), t.Iusec);
        BinaryPrimitives.WriteUInt64LittleEndian(v.AsSpan(16), t.Vsec);
        BinaryPrimitives.WriteUInt64LittleEndian(v.AsSpan(24), t.Vusec);
        remote.Call($"setitimer({which})", remote.Nr.Setitimer, (ulong)which, remote.Put(v), 0);
        remote.ResetScratch();
    }

    /// <summary>A POSIX timer with its dumped id: timers are created in order (and extra ones deleted) until the kernel hands out that id.</summary>
    private static void PosixTimer(RemoteTask remote, int pid, posix_timer_entry t)
    {
        // struct sigevent: sigev_value, sigev_signo, sigev_notify, then the thread id for SIGEV_THREAD_ID.
        var ev = new byte[64];
        BinaryPrimitives.WriteUInt64LittleEndian(ev, t.SivalPtr);
        BinaryPrimitives.WriteUInt32LittleEndian(ev.AsSpan(8), t.SiSigno);
        BinaryPrimitives.WriteUInt32LittleEndian(ev.AsSpan(12), t.ItSigevNotify);
        BinaryPrimitives.WriteInt32LittleEndian(ev.AsSpan(16), t.HasNotifyThreadId ? t.NotifyThreadId : 0);
        ulong evAt = remote.Put(ev);
        ulong idAt = remote.Reserve(4);
        var extra = new List<int>();
        for (int attempts = 0; ; attempts++)
        {
            remote.Call("timer_create", remote.Nr.TimerCreate, t.ClockId, evAt, idAt);
            int id = BinaryPrimitives.ReadInt32LittleEndian(remote.Read(idAt, 4));
            if (id == (int)t.ItId)
                break;
            if (id > (int)t.ItId || attempts > 100_000)
                throw new CriuModeException($"pid {pid}: POSIX timer {t.ItId} cannot be made again (the kernel gave id {id})");
            extra.Add(id);
        }
        foreach (int id in extra)
            remote.Call("timer_delete", remote.Nr.TimerDelete, (ulong)id);
        var spec = new byte[32];
        BinaryPrimitives.WriteUInt64LittleEndian(spec, t.Isec);
        BinaryPrimitives.WriteUInt64LittleEndian(spec.AsSpan(8), t.Insec);
        BinaryPrimitives.WriteUInt64LittleEndian(spec.AsSpan(16), t.Vsec);
        BinaryPrimitives.WriteUInt64LittleEndian(spec.AsSpan(24), t.Vnsec);
        if ((t.Vsec | t.Vnsec) != 0)
            remote.Call("timer_settime", remote.Nr.TimerSettime, t.ItId, 0, remote.Put(spec), 0);
        remote.ResetScratch();
    }

    /// <summary>Per-thread state that the thread itself must set; credentials last of all.</summary>
    public static void Thread(RestoreContext ctx, ProcessImages p, int tid, RemoteTask remote)
    {
        var core = p.Cores[(uint)tid];
        var tcore = core.ThreadCore ?? throw new CriuModeException($"core-{tid}.img has no thread core");
        if (!string.IsNullOrEmpty(tcore.Comm))
            remote.Call("prctl(PR_SET_NAME)", remote.Nr.Prctl, PrSetName, remote.PutString(tcore.Comm));
        if (tcore.Sas is { } sas && (sas.SsFlags & 2) == 0)
        {
            var ss = new byte[24];
            BinaryPrimitives.WriteUInt64LittleEndian(ss, sas.SsSp);
            BinaryPrimitives.WriteUInt32LittleEndian(ss.AsSpan(8), sas.SsFlags);
            BinaryPrimitives.WriteUInt64LittleEndian(ss.AsSpan(16), sas.SsSize);
            remote.Call("sigaltstack", remote.Nr.Sigaltstack, remote.Put(ss), 0);
        }
        remote.ResetScratch();
        remote.Call("set_tid_address", remote.Nr.SetTidAddress, core.ThreadInfo?.ClearTidAddr ?? 0);
        if (tcore.FutexRla != 0)
            remote.Call("set_robust_list", remote.Nr.SetRobustList, tcore.FutexRla, tcore.FutexRlaLen);
        if (tcore.PdeathSig != 0)
            remote.Call("prctl(PR_SET_PDEATHSIG)", remote.Nr.Prctl, PrSetPdeathsig, tcore.PdeathSig);
        if (tcore.SchedNice != 0)
            remote.Call("setpriority", remote.Nr.Setpriority, 0, (ulong)tid, unchecked((ulong)tcore.SchedNice));
        if (tcore.SchedPolicy != 0)
        {
            var param = new byte[4];
            BinaryPrimitives.WriteUInt32LittleEndian(param, tcore.SchedPrio);
            remote.Call("sched_setscheduler", remote.Nr.SchedSetscheduler, (ulong)tid, tcore.SchedPolicy, remote.Put(param));
            remote.ResetScratch();
        }
        if (tcore.RseqEntry is { RseqAbiPointer: not 0 } rseq)
            remote.Call("rseq", remote.Nr.Rseq, rseq.RseqAbiPointer, rseq.RseqAbiSize, 0, rseq.Signature);
        foreach (var s in tcore.SignalsP?.Signals ?? [])
        {
            ulong info = remote.Put(s.Siginfo.Span);
            int signo = BinaryPrimitives.ReadInt32LittleEndian(s.Siginfo.Span);
            remote.Call($"rt_tgsigqueueinfo({signo})", remote.Nr.RtTgsigqueueinfo, (ulong)p.Pid, (ulong)tid, (ulong)signo, info);
            remote.ResetScratch();
        }
        if (tcore.Creds is { } creds)
            Credentials(remote, creds);
    }

    /// <summary>
    /// The thread's credentials, in the order the kernel allows (as CRIU does): groups; the ids,
    /// with SECURE_NO_SETUID_FIXUP so that the capabilities survive the change; securebits; the
    /// bounding set trimmed while CAP_SETPCAP is still held; the capability sets; ambient
    /// capabilities; no_new_privs. A thread made by memcr starts as root with every capability.
    /// </summary>
    private static void Credentials(RemoteTask remote, creds_entry c)
    {
        const int PrCapbsetDrop = 24, PrCapAmbient = 47, PrCapAmbientRaise = 2, PrSetNoNewPrivs = 38, SecureNoSetuidFixup = 1 << 2;
        if (c.Groups.Count > 0)
        {
            var groups = new byte[c.Groups.Count * 4];
            for (int g = 0; g < c.Groups.Count; g++)
                BinaryPrimitives.WriteUInt32LittleEndian(groups.AsSpan(g * 4), c.Groups[g]);
            remote.Call("setgroups", remote.Nr.Setgroups, (ulong)c.Groups.Count, remote.Put(groups));
            remote.ResetScratch();
        }
        ulong secbits = 0;
        if ((c.Uid | c.Euid | c.Suid | c.Fsuid | c.Gid | c.Egid | c.Sgid | c.Fsgid) != 0)
        {
            secbits = SecureNoSetuidFixup;
            remote.Call("prctl(PR_SET_SECUREBITS)", remote.Nr.Prctl, PrSetSecurebits, secbits);
            remote.Call("setresuid", remote.Nr.Setresuid, c.Uid, c.Euid, c.Suid);
            remote.Call("setfsuid", remote.Nr.Setfsuid, c.Fsuid);
            remote.Call("setresgid", remote.Nr.Setresgid, c.Gid, c.Egid, c.Sgid);
            remote.Call("setfsgid", remote.Nr.Setfsgid, c.Fsgid);
        }
        if (c.Secbits != secbits)
            remote.Call("prctl(PR_SET_SECUREBITS)", remote.Nr.Prctl, PrSetSecurebits, c.Secbits);
        int lastCap = LastCapability();
        for (int cap = 0; cap <= lastCap; cap++)
        {
            if (c.CapBnd.Count > 0 && !Has(c.CapBnd, cap))
                remote.Call($"prctl(PR_CAPBSET_DROP, {cap})", remote.Nr.Prctl, PrCapbsetDrop, (ulong)cap);
        }
        // capset: header {version 3, pid 0}, then two {effective, permitted, inheritable} words.
        var caps = new byte[8 + 24];
        BinaryPrimitives.WriteUInt32LittleEndian(caps, 0x20080522);
        for (int w = 0; w < 2; w++)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(caps.AsSpan(8 + w * 12), w < c.CapEff.Count ? c.CapEff[w] : 0);
            BinaryPrimitives.WriteUInt32LittleEndian(caps.AsSpan(12 + w * 12), w < c.CapPrm.Count ? c.CapPrm[w] : 0);
            BinaryPrimitives.WriteUInt32LittleEndian(caps.AsSpan(16 + w * 12), w < c.CapInh.Count ? c.CapInh[w] : 0);
        }
        ulong at = remote.Put(caps);
        remote.Call("capset", remote.Nr.Capset, at, at + 8);
        remote.ResetScratch();
        for (int cap = 0; cap <= lastCap; cap++)
        {
            if (Has(c.CapAmb, cap))
                remote.Call($"prctl(PR_CAP_AMBIENT_RAISE, {cap})", remote.Nr.Prctl, PrCapAmbient, PrCapAmbientRaise, (ulong)cap);
        }
        if (c.HasNoNewPrivs && c.NoNewPrivs != 0)
            remote.Call("prctl(PR_SET_NO_NEW_PRIVS)", remote.Nr.Prctl, PrSetNoNewPrivs, 1);
    }

    private static bool Has(Google.Protobuf.Collections.RepeatedField<uint> words, int cap) => cap / 32 < words.Count && (words[cap / 32] & (1u << (cap % 32))) != 0;

    private static int LastCapability() =>
        int.Parse(File.ReadAllText("/proc/sys/kernel/cap_last_cap").Trim(), System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>Registers, FPU and vector state, TLS entries and the signal mask, set through ptrace once no remote syscall will run in the thread again.</summary>
    public static void Registers(Tracer tracer, ProcessImages p, int tid)
    {
        var core = p.Cores[(uint)tid];
        var info = core.ThreadInfo ?? throw new CriuModeException($"core-{tid}.img has no x86 thread info");
        var xstate = new byte[X64ThreadState.XstateBufferSize];
        int n = tracer.GetRegisterSet(tid, X64ThreadState.NtX86Xstate, xstate);
        X64ThreadState.ApplyFpRegs(info.Fpregs, xstate.AsSpan(0, n));
        tracer.SetRegisterSet(tid, X64ThreadState.NtX86Xstate, xstate.AsSpan(0, n));
        foreach (var tls in info.Tls.Where(t => !X64ThreadState.IsEmpty(t)))
            tracer.SetThreadArea(tid, (int)tls.EntryNumber, X64ThreadState.RawTls(tls));
        tracer.SetRegisters(tid, X64ThreadState.RawRegisters(info.Gpregs));
        ulong mask = tid == p.Pid ? p.Leader.Tc?.BlkSigset ?? 0 : core.ThreadCore?.BlkSigset ?? 0;
        tracer.SetSignalMask(tid, mask);
    }

    private static void TryWrite(string path, string value, CriuLog log)
    {
        try
        {
            File.WriteAllText(path, value);
        }
        catch (IOException e)
        {
            log.Warn($"cannot write {value} to {path}: {e.Message}");
        }
    }
}
