using Memcr.CriuImages;
using Memcr.Dump.Dumping;
using Memcr.Dump.Files;
using Memcr.Linux.Kernel;
using Memcr.Linux.Proc;

namespace Memcr.Dump.Restoring;

/// <summary>
/// What must hold before a single process is made: the pids are free, every file the tree maps or
/// opens is the one that was dumped (same type, size and ELF build-id), the vDSO of this kernel
/// has the dumped size, and a terminal is there when the tree needs one.
/// </summary>
internal static class RestoreChecks
{
    public static void Run(DumpImages images, RestoreOptions options)
    {
        if (!KernelFeatures.Has(KernelFeatures.SysAdmin) && !KernelFeatures.Has(KernelFeatures.CheckpointRestore))
            throw new CriuModeException("memcr restore needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN to give the processes their pids (clone3 with set_tid); nothing was restored");
        if (!KernelFeatures.Has(KernelFeatures.SysPtrace))
            throw new CriuModeException("memcr restore needs CAP_SYS_PTRACE to build the processes through ptrace; nothing was restored");
        foreach (var (id, process) in images.AllIds)
        {
            if (!Directory.Exists($"/proc/{id}"))
                continue;
            string comm;
            try
            {
                comm = File.ReadAllText($"/proc/{id}/comm").Trim();
            }
            catch (IOException)
            {
                continue; // it ended meanwhile
            }
            string what = id == process.Tree.Pid ? $"pid {id}" : $"tid {id} (a thread of pid {process.Pid})";
            throw new CriuModeException($"{what} is in use by '{comm}': the restored tree needs it; nothing was restored");
        }
        var checkedFiles = new HashSet<uint>();
        ulong cpu = Arch.X64ThreadState.CpuFeatures();
        var liveUnix = new Lazy<Dictionary<uint, UnixSocketInfo>>(UnixDiag.All);
        foreach (var p in images.Processes)
        {
            if (p.Leader.Mtype != core_entry.Types.march.X8664)
                throw new CriuModeException($"pid {p.Pid} was dumped on {p.Leader.Mtype}, this machine is x86_64; nothing was restored");
            foreach (var (tid, core) in p.Cores)
            {
                if (core.ThreadInfo?.Fpregs is { } fp && Arch.X64ThreadState.Incompatibility(fp, cpu) is { } why)
                    throw new CriuModeException($"{(tid == p.Pid ? $"pid {tid}" : $"tid {tid} of pid {p.Pid}")} cannot run on this machine: {why}; its code may use instructions this CPU does not have; nothing was restored");
            }
            foreach (var v in p.Mm.Vmas.Where(v => (v.Status & (MemoryDumper.FilePrivate | MemoryDumper.FileShared)) != 0))
                CheckFile(images, (uint)v.Shmid, $"the mapping 0x{v.Start:x}-0x{v.End:x} of pid {p.Pid}", checkedFiles);
            CheckFile(images, p.Mm.ExeFileId, $"the executable of pid {p.Pid}", checkedFiles);
            CheckFile(images, p.Fs.CwdId, $"the working directory of pid {p.Pid}", checkedFiles);
            CheckFile(images, p.Fs.RootId, $"the root directory of pid {p.Pid}", checkedFiles);
            foreach (var fd in p.Fds)
            {
                var f = images.File(fd.Id, $"fd {fd.Fd} of pid {p.Pid}");
                switch (f.Type)
                {
                    case fd_types.Reg:
                        CheckFile(images, fd.Id, $"fd {fd.Fd} of pid {p.Pid}", checkedFiles);
                        break;
                    case fd_types.Tty:
                        if (!options.ShellJob)
                            throw new CriuModeException($"fd {fd.Fd} of pid {p.Pid} is a terminal: restore the tree into this terminal with --shell-job (-j); nothing was restored");
                        if (!ProcessCalls.IsTerminal(0))
                            throw new CriuModeException($"fd {fd.Fd} of pid {p.Pid} is a terminal, but memcr restore's stdin is not one: run it in the terminal the tree is to use; nothing was restored");
                        break;
                    case fd_types.Pipe or fd_types.Eventfd or fd_types.Eventpoll or fd_types.Signalfd or fd_types.Timerfd or fd_types.Memfd:
                        break;
                    case fd_types.Fifo:
                        CheckFile(images, f.Fifo.RegfId, $"the FIFO at fd {fd.Fd} of pid {p.Pid}", checkedFiles);
                        break;
                    case fd_types.Inotify:
                        foreach (var w in f.Ify.Wd)
                        {
                            if (w.FHandle.Path is not { Length: > 0 } watched)
                                throw new CriuModeException($"fd {fd.Fd} of pid {p.Pid} is an inotify instance whose watch {w.Wd} names no path, which memcr cannot restore; nothing was restored");
                            if (!File.Exists(watched) && !Directory.Exists(watched))
                                throw new CriuModeException($"fd {fd.Fd} of pid {p.Pid} watches {watched} with inotify, and it is gone; nothing was restored");
                        }
                        break;
                    case fd_types.Unixsk:
                        Sockets.UnixSocketRestorer.Check(images, f.Usk, $"fd {fd.Fd} of pid {p.Pid}", options, liveUnix);
                        break;
                    case fd_types.Inetsk:
                        CheckInet(images, f.Isk, $"fd {fd.Fd} of pid {p.Pid}", options);
                        break;
                    default:
                        throw new CriuModeException($"fd {fd.Fd} of pid {p.Pid} is a {f.Type.OriginalName()} file, which memcr cannot restore yet; nothing was restored");
                }
            }
            foreach (var v in p.Mm.Vmas.Where(v => (v.Status & MemoryDumper.AnonShared) != 0))
                throw new CriuModeException($"pid {p.Pid} maps System V or old-style shared memory at 0x{v.Start:x}, which memcr cannot restore yet; nothing was restored");
            foreach (var v in p.Mm.Vmas.Where(v => (v.Status & MemoryDumper.Memfd) != 0))
            {
                var f = images.File((uint)v.Shmid, $"the shared mapping 0x{v.Start:x} of pid {p.Pid}");
                if (f.Type != fd_types.Memfd || !images.MemfdInodes.ContainsKey(f.Memfd.InodeId))
                    throw new CriuModeException($"the shared mapping 0x{v.Start:x} of pid {p.Pid} names file {v.Shmid}, which is not a memfd of memfd.img; nothing was restored");
            }
        }
        if (options.FileLocks)
            CheckLocks(images);
        CheckVdso(images.Root);
    }

    private static void CheckInet(DumpImages images, inet_sk_entry e, string where, RestoreOptions options)
    {
        bool tcp = e.Proto == InetDiag.Tcp;
        if (e.Family is not (InetDiag.AfInet or InetDiag.AfInet6) || !(tcp || e.Proto == InetDiag.Udp))
            throw new CriuModeException($"{where} is a socket of family {e.Family}, protocol {e.Proto}: memcr restores TCP and UDP over IPv4 and IPv6; nothing was restored");
        if (!tcp)
            return;
        var (src, dst) = Sockets.InetSocketDumper.Endpoints(e);
        string conn = $"{src} -> {dst}";
        switch (e.State)
        {
            case InetSocketInfo.Listen or InetSocketInfo.Close:
                return;
            case InetSocketInfo.Established when options.TcpClose:
                return;
            case InetSocketInfo.Established when !options.TcpEstablished:
                throw new CriuModeException($"{where} is the established TCP connection {conn}: restore it with --tcp-established (or closed, with --tcp-close), as with CRIU; nothing was restored");
            case InetSocketInfo.Established:
                string stream = Path.Combine(images.Dir, ImageKinds.TcpStream.FileNameForHex(e.Ino));
                if (!File.Exists(stream))
                    throw new CriuModeException($"{where} is the TCP connection {conn}, but {stream} is missing (was it dumped with --tcp-close?): restore it with --tcp-close; nothing was restored");
                return;
            default:
                throw new CriuModeException($"{where} is a TCP connection {conn} in state {InetSocketInfo.StateName((int)e.State)}, which memcr cannot restore; nothing was restored");
        }
    }

    private static void CheckLocks(DumpImages images)
    {
        foreach (var l in images.Locks)
        {
            var p = images.Processes.FirstOrDefault(p => p.Pid == l.Pid);
            string where = $"{Path.Combine(images.Dir, ImageKinds.FileLocks.FileName)}: {FileLocks.Describe(l)}";
            if (p is null || !p.Fds.Any(f => f.Fd == l.Fd))
                throw new CriuModeException($"{where} is held through fd {l.Fd} of pid {l.Pid}, which {(p is null ? "is not in the tree" : "that process does not have")}; nothing was restored");
            if (l.Flag is not (FileLocks.Posix or FileLocks.Flock or FileLocks.Ofd) || l.Type is not (FileLocks.ReadLock or FileLocks.WriteLock))
                throw new CriuModeException($"{where} (kind {l.Flag}, type {l.Type}) is a lock memcr cannot take (it takes flock, POSIX and OFD read and write locks); nothing was restored");
        }
    }

    /// <summary>A regular file of the dump is there, of the same type, size and build-id.</summary>
    private static void CheckFile(DumpImages images, uint id, string user, HashSet<uint> done)
    {
        if (!done.Add(id))
            return;
        var f = images.File(id, user);
        if (f.Type != fd_types.Reg || f.Reg is not { } reg)
            return;
        string path = reg.Name;
        FileStatus st;
        try
        {
            st = FileCalls.Stat(path);
        }
        catch (Linux.SyscallException e)
        {
            throw new CriuModeException($"{path}, {user}, is gone since the dump ({e.Message}); nothing was restored");
        }
        if (reg.HasMode && (reg.Mode & 0xf000) != (st.Mode & 0xf000))
            throw new CriuModeException($"{path}, {user}, is not the same kind of file as at the dump (mode 0{Convert.ToString(reg.Mode, 8)} then, 0{Convert.ToString(st.Mode, 8)} now); nothing was restored");
        if (reg.HasSize && st.IsRegular && (ulong)st.Size != reg.Size)
            throw new CriuModeException($"{Path.GetFileName(path)} changed since the dump ({path}, {user}: size {reg.Size} then, {st.Size} now); nothing was restored");
        if (reg.BuildId.Count > 0)
        {
            uint[]? now;
            using (var stream = FdDumper.OpenForReading(path))
                now = stream is null ? null : ElfBuildId.Read(stream);
            if (now is null || !now.SequenceEqual(reg.BuildId))
            {
                throw new CriuModeException(
                    $"{Path.GetFileName(path)} changed since the dump ({path}, {user}: build-id {ElfBuildId.Hex(reg.BuildId)} then, {(now is null ? "none" : ElfBuildId.Hex(now))} now); nothing was restored");
            }
        }
    }

    /// <summary>The dumped vDSO and vvar are moved to, not rebuilt: this kernel's must be the same size.</summary>
    private static void CheckVdso(ProcessImages root)
    {
        var ours = ProcFs.ReadMaps(Environment.ProcessId);
        ulong Size(string name) => ours.Where(v => v.Path == name).Aggregate(0UL, (s, v) => s + v.Length);
        var vdso = root.Mm.Vmas.FirstOrDefault(v => (v.Status & MemoryDumper.Vdso) != 0);
        var vvar = root.Mm.Vmas.FirstOrDefault(v => (v.Status & MemoryDumper.Vvar) != 0);
        if (vdso is null)
            throw new CriuModeException($"pid {root.Pid} had no vDSO: such a process cannot be restored by memcr; nothing was restored");
        if (vdso.End - vdso.Start != Size("[vdso]"))
            throw new CriuModeException($"the vDSO of pid {root.Pid} was {(vdso.End - vdso.Start) / 1024} KiB, this kernel's is {Size("[vdso]") / 1024} KiB: the dump comes from another kernel, and memcr cannot restore across vDSOs yet; nothing was restored");
        ulong ourVvar = Size("[vvar]") + Size("[vvar_vclock]");
        if (vvar is not null && vvar.End - vvar.Start != ourVvar)
            throw new CriuModeException($"the vvar area of pid {root.Pid} was {(vvar.End - vvar.Start) / 1024} KiB, this kernel's is {ourVvar / 1024} KiB: the dump comes from another kernel; nothing was restored");
    }
}
