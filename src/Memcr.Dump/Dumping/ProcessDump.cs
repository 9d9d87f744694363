using Memcr.CriuImages;
using Memcr.Dump.Files;
using Memcr.Linux.Arch;
using Memcr.Linux.Kernel;
using Memcr.Linux.Memory;
using Memcr.Linux.Proc;
using Memcr.Linux.Ptrace;

namespace Memcr.Dump.Dumping;

/// <summary>
/// Everything the images say about one process of the tree, collected while every thread is
/// stopped. Nothing of the process is changed but a scratch mapping for remote syscall
/// arguments, removed before <see cref="Collect"/> returns.
/// </summary>
internal sealed class ProcessDump(Tracer tracer, int parent, int index)
{
    private const int ScratchBytes = 64 << 10;

    public int Pid => tracer.Pid;

    public Tracer Tracer => tracer;

    /// <summary>Ids of the process's mm, fd table, fs and signal handlers: CRIU gives 1 to itself, processes get 2, 3, ...</summary>
    public uint KobjId => (uint)index + 2;

    public uint PagesId => (uint)index + 1;

    public pstree_entry Pstree { get; private set; } = new();

    public Dictionary<int, core_entry> Cores { get; } = [];

    public mm_entry Mm { get; } = new();

    public fs_entry Fs { get; private set; } = new();

    public List<fdinfo_entry> Fds { get; private set; } = [];

    public List<PageSegment> Segments { get; private set; } = [];

    public List<pagemap_entry> Pagemap { get; private set; } = [];

    public long PagesScanned { get; private set; }

    public void Collect(FileTable files, Sockets.InetSocketDumper sockets, Sockets.UnixSocketDumper unix, DumpOptions options, CriuLog log)
    {
        int pid = Pid;
        var stat = ProcStat.Read(pid);
        var status = ProcFs.ReadStatus(pid);
        if (status.Seccomp != 0)
            throw new CriuModeException($"pid {pid} ({status.Name}) runs under seccomp (mode {status.Seccomp}): seccomp is not supported yet; pid {pid} was left running untouched");
        CheckNamespaces(pid, status.Name);
        var threads = tracer.Threads.Where(t => t.State != TraceState.Gone).Select(t => t.Tid).Order().ToList();
        Pstree = new pstree_entry { Pid = (uint)pid, Ppid = (uint)parent, Pgid = (uint)stat.Pgrp, Sid = (uint)stat.Session };
        Pstree.Threads.AddRange(threads.Select(t => (uint)t));

        // /proc and ptrace first: nothing in the process has changed yet.
        var smaps = ProcFs.ReadSmaps(pid);
        using (var pidfd = ProcessCalls.PidfdOpen(pid))
            Fds = new FdDumper(files, sockets, unix, options, log).Dump(pid, pidfd);
        var vmas = MemoryDumper.Layout(pid, smaps, files);
        (Segments, Pagemap, PagesScanned) = MemoryDumper.Pages(pid, vmas);
        uint exe = files.PathEntry(Link(pid, "exe"), FileCalls.Stat($"/proc/{pid}/exe"), () => FdDumper.OpenForReading($"/proc/{pid}/exe"));
        Fs = new fs_entry
        {
            CwdId = files.PathEntry(Link(pid, "cwd"), FileCalls.Stat($"/proc/{pid}/cwd")),
            RootId = files.PathEntry(Link(pid, "root"), FileCalls.Stat($"/proc/{pid}/root")),
            Umask = status.Umask,
        };
        var registers = threads.ToDictionary(t => t, t => TaskDumper.Registers(tracer, t));

        // Then what only the process itself can tell, through remote syscalls in its threads.
        var arch = CpuArchitecture.Current;
        using var memory = new RemoteMemory(pid);
        ulong insn = RemoteSyscall.FindSyscallInstruction(pid, smaps, arch, memory);
        using var leader = RemoteTask.Open(tracer, arch, memory, insn, pid);
        leader.MapScratch(ScratchBytes);
        try
        {
            ulong secbits = TaskDumper.SecureBits(leader);
            foreach (int tid in threads)
            {
                var (info, mask) = registers[tid];
                using var own = tid == pid ? null : RemoteTask.Open(tracer, arch, memory, insn, tid);
                var remote = own ?? leader;
                remote.UseScratch(leader.Scratch, leader.ScratchSize);
                info.ClearTidAddr = TaskDumper.TidAddress(remote);
                Cores[tid] = new core_entry
                {
                    Mtype = core_entry.Types.march.X8664,
                    ThreadInfo = info,
                    ThreadCore = TaskDumper.ThreadCore(tracer, remote, pid, tid, mask, tid == pid, secbits),
                };
            }
            leader.ResetScratch();
            Cores[pid].Tc = TaskDumper.TaskCore(tracer, leader, pid, stat, registers[pid].Mask, tracer.WasGroupStopped);
            Mm.MmBrk = TaskDumper.Brk(leader);
            Mm.Dumpable = TaskDumper.Dumpable(leader);
            Mm.ThpDisabled = TaskDumper.ThpDisabled(leader);
        }
        finally
        {
            leader.UnmapScratch();
        }

        Mm.MmStartCode = stat.StartCode;
        Mm.MmEndCode = stat.EndCode;
        Mm.MmStartData = stat.StartData;
        Mm.MmEndData = stat.EndData;
        Mm.MmStartStack = stat.StartStack;
        Mm.MmStartBrk = stat.StartBrk;
        Mm.MmArgStart = stat.ArgStart;
        Mm.MmArgEnd = stat.ArgEnd;
        Mm.MmEnvStart = stat.EnvStart;
        Mm.MmEnvEnd = stat.EnvEnd;
        Mm.ExeFileId = exe;
        Mm.MmSavedAuxv.AddRange(ProcFs.ReadAuxv(pid));
        Mm.Vmas.AddRange(vmas.Select(v => v.Entry));
        log.Info($"pid {pid} ({status.Name}): {threads.Count} thread(s), {vmas.Count} VMAs, {Pagemap.Sum(e => (long)e.NrPages)} pages, {Fds.Count} fds");
    }

    public task_kobj_ids_entry Ids(task_kobj_ids_entry root) => new()
    {
        VmId = KobjId,
        FilesId = KobjId,
        FsId = KobjId,
        SighandId = KobjId,
        PidNsId = root.PidNsId,
        NetNsId = root.NetNsId,
        IpcNsId = root.IpcNsId,
        UtsNsId = root.UtsNsId,
        MntNsId = root.MntNsId,
        UserNsId = root.UserNsId,
        CgroupNsId = root.CgroupNsId,
        TimeNsId = root.TimeNsId,
    };

    private static string Link(int pid, string what) =>
        new FileInfo($"/proc/{pid}/{what}").LinkTarget ?? throw new ProcessGoneException(pid, $"cannot read /proc/{pid}/{what}: the process has gone");

    /// <summary>The dump restores processes into memcr's own namespaces: a process in others is refused.</summary>
    private static void CheckNamespaces(int pid, string name)
    {
        foreach (var ns in new[] { "mnt", "net", "pid", "ipc", "uts", "user", "cgroup", "time" })
        {
            string? theirs = new FileInfo($"/proc/{pid}/ns/{ns}").LinkTarget;
            string? ours = new FileInfo($"/proc/self/ns/{ns}").LinkTarget;
            if (theirs is not null && ours is not null && theirs != ours)
                throw new CriuModeException($"pid {pid} ({name}) is in another {ns} namespace ({theirs}, memcr is in {ours}): namespaces are not supported yet; pid {pid} was left running untouched");
        }
    }
}
