using System.Diagnostics;
using Google.Protobuf;
using Memcr.CriuImages;
using Memcr.Dump.Files;
using Memcr.Linux;
using Memcr.Linux.Kernel;
using Memcr.Linux.Memory;
using Memcr.Linux.Proc;
using Memcr.Linux.Ptrace;

namespace Memcr.Dump.Dumping;

/// <summary>What a dump did, for stats-dump and the caller.</summary>
public sealed record DumpResult(int Processes, int Threads, long PagesWritten, long PagesScanned, TimeSpan Frozen, long ImageBytes);

/// <summary>
/// memcr dump: freezes a process tree, writes CRIU's images of it into a directory, then kills the
/// tree (or, with -R, lets it run on). Until the images are complete nothing of the tree is
/// changed for good: any failure releases every process as it was and removes what was written.
/// All ptrace work happens on the calling thread.
/// </summary>
public static class TreeDumper
{
    /// <summary>The ids CRIU gives the namespaces it found the tree in (inventory root_ids, ids-PID).</summary>
    private static readonly task_kobj_ids_entry RootIds = new()
    {
        VmId = 1, FilesId = 1, FsId = 1, SighandId = 1,
        PidNsId = 1, NetNsId = 2, IpcNsId = 3, UtsNsId = 4, TimeNsId = 5, MntNsId = 6, UserNsId = 7, CgroupNsId = 8,
    };

    public static DumpResult Dump(DumpOptions options, CriuLog log)
    {
        if (TargetCheck.Refusal(options.Pid, out var status) is { } why)
            throw new CriuModeException(why);
        if (!KernelFeatures.Has(KernelFeatures.SysPtrace))
            throw new CriuModeException($"memcr dump needs CAP_SYS_PTRACE to freeze and inspect pid {options.Pid}; pid {options.Pid} was left untouched");
        if (!KernelFeatures.Has(KernelFeatures.SysAdmin) && !KernelFeatures.Has(KernelFeatures.CheckpointRestore))
            throw new CriuModeException($"memcr dump needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN to read /proc/{options.Pid}/map_files; pid {options.Pid} was left untouched");
        if (TargetCheck.DirRefusal(options.Dir) is { } dirProblem)
            throw new CriuModeException(dirProblem);
        var root = ProcStat.Read(options.Pid);
        if (root.Session != options.Pid && !options.ShellJob)
        {
            throw new CriuModeException(
                $"pid {options.Pid} ({status!.Name}) is not a session leader (its session is {root.Session}): a program started from a shell is a shell job, dump it with --shell-job (-j)");
        }

        CriuImageWriter.LoadSchema();
        if (options.TcpEstablished && options.NetworkLock == NetworkLockMethod.Nftables)
            Sockets.NetworkLock.RemoveStale(log);
        var clock = Stopwatch.StartNew();
        log.Info($"freezing the tree of pid {options.Pid}");
        TreeTracer tree;
        try
        {
            tree = TreeTracer.Seize(options.Pid, log.Debug, (zombie, parent) => throw new CriuModeException(
                $"pid {zombie}, a child of pid {parent}, is a zombie (it has exited and was not waited for): zombies are not supported yet; the tree was left running untouched"));
        }
        catch (SyscallException e)
        {
            throw new CriuModeException($"cannot freeze the tree of pid {options.Pid}: {e.Message}", e);
        }
        var frozenAt = clock.Elapsed;
        var written = new List<string>();
        using var sockets = new Sockets.InetSocketDumper(options, log);
        using var unix = new Sockets.UnixSocketDumper(options);
        try
        {
            var result = DumpFrozen(tree, sockets, unix, options, log, written, frozenAt, clock);
            if (options.LeaveRunning)
            {
                sockets.Resume();
                tree.Detach();
                log.Info("the tree goes on running (--leave-running)");
            }
            else
            {
                // The images are all that is left of the tree once it is killed: on disk first.
                FileOps.SyncAll(written, options.Dir);
                tree.Kill();
                log.Info($"the tree of pid {options.Pid} was killed after the dump");
            }
            return result;
        }
        catch (Exception e)
        {
            sockets.Resume();
            try
            {
                tree.Detach();
            }
            catch (Exception detach) when (detach is AggregateException or SyscallException)
            {
                log.Error($"cannot release the tree: {detach.Message}");
            }
            foreach (var file in written)
                File.Delete(file);
            if (e is CriuModeException c && c.Message.Contains("untouched", StringComparison.Ordinal))
                throw;
            if (e is CriuModeException)
                throw new CriuModeException($"cannot dump the tree of pid {options.Pid}: {e.Message}; the tree was left running untouched and the partial images were removed", e);
            string reason = e is ProcessGoneException ? $"a process of the tree ended during the dump: {e.Message}" : e.Message;
            throw new CriuModeException($"cannot dump the tree of pid {options.Pid}: {reason}; the tree was left running untouched and the partial images were removed", e);
        }
    }

    private static DumpResult DumpFrozen(TreeTracer tree, Sockets.InetSocketDumper sockets, Sockets.UnixSocketDumper unix, DumpOptions options, CriuLog log, List<string> written, TimeSpan frozenAt, Stopwatch clock)
    {
        var files = new FileTable();
        var processes = tree.Processes.Select((p, i) => new ProcessDump(p, tree.ParentOf(p.Pid), i)).ToList();
        foreach (var p in processes)
            p.Collect(files, sockets, unix, options, log);
        files.Entries.AddRange(unix.CheckPeers(files.NewId));
        string runId = Guid.NewGuid().ToString();
        var streams = sockets.LockAndSave(runId, options.Pid);
        log.Info($"collected the state of {processes.Count} process(es) in {clock.Elapsed.TotalMilliseconds - frozenAt.TotalMilliseconds:F1} ms");

        string dir = options.Dir;
        string Path(string name)
        {
            string path = System.IO.Path.Combine(dir, name);
            written.Add(path);
            return path;
        }
        void Write(ImageKind kind, string name, params IMessage[] entries)
        {
            using var w = CriuImageWriter.Create(Path(name), kind);
            foreach (var e in entries)
                w.Write(e);
        }

        var pages = new PageWriter(new BufferPool(6, PageWriter.BufferBytes));
        long pagesWritten = 0;
        foreach (var p in processes)
        {
            foreach (var (tid, core) in p.Cores)
                Write(ImageKinds.Core, ImageKinds.Core.FileNameFor(tid), core);
            Write(ImageKinds.Ids, ImageKinds.Ids.FileNameFor(p.Pid), p.Ids(RootIds));
            Write(ImageKinds.Mm, ImageKinds.Mm.FileNameFor(p.Pid), p.Mm);
            Write(ImageKinds.Fs, ImageKinds.Fs.FileNameFor(p.Pid), p.Fs);
            Write(ImageKinds.Fdinfo, ImageKinds.Fdinfo.FileNameFor(p.KobjId), [.. p.Fds]);
            Write(ImageKinds.Pagemap, ImageKinds.Pagemap.FileNameFor(p.Pid), [new pagemap_head { PagesId = p.PagesId }, .. p.Pagemap]);
            log.Debug($"pid {p.Pid}: state images written");
            pages.Write(p.Pid, p.Segments, Path($"pages-{p.PagesId}.img"));
            pagesWritten += p.Pagemap.Sum(e => (long)e.NrPages);
            log.Debug($"pid {p.Pid}: pages written");
        }
        Write(ImageKinds.Pstree, ImageKinds.Pstree.FileName, [.. processes.Select(p => p.Pstree)]);
        Write(ImageKinds.Files, ImageKinds.Files.FileName, [.. files.Entries]);
        if (files.PipeData.Count > 0)
        {
            using var w = CriuImageWriter.Create(Path(ImageKinds.PipesData.FileName), ImageKinds.PipesData);
            foreach (var (entry, data) in files.PipeData)
                w.Write(entry, data);
        }
        if (files.FifoData.Count > 0)
        {
            using var w = CriuImageWriter.Create(Path(ImageKinds.FifoData.FileName), ImageKinds.FifoData);
            foreach (var (entry, data) in files.FifoData)
                w.Write(entry, data);
        }
        if (files.MemfdInodes.Count > 0)
        {
            Write(ImageKinds.MemfdInode, ImageKinds.MemfdInode.FileName, [.. files.MemfdInodes.Select(m => m.Entry)]);
            uint pagesId = (uint)processes.Count;
            foreach (var (inode, file) in files.MemfdInodes)
            {
                using (file)
                    SharedMemory.Dump(inode, file, ++pagesId, Path);
            }
        }
        if (unix.Queues.Count > 0)
        {
            using var w = CriuImageWriter.Create(Path(ImageKinds.SkQueues.FileName), ImageKinds.SkQueues);
            foreach (var (entry, data) in unix.Queues)
                w.Write(entry, data);
        }
        foreach (var (inode, entry, queues) in streams)
        {
            using var w = CriuImageWriter.Create(Path(ImageKinds.TcpStream.FileNameForHex(inode)), ImageKinds.TcpStream);
            w.Write(entry, queues);
        }
        if (files.Locks.Count > 0)
            Write(ImageKinds.FileLocks, ImageKinds.FileLocks.FileName, [.. files.Locks]);
        if (files.TtyInfos.Count > 0)
            Write(ImageKinds.TtyInfo, ImageKinds.TtyInfo.FileName, [.. files.TtyInfos]);
        Write(ImageKinds.Seccomp, ImageKinds.Seccomp.FileName, new seccomp_entry());
        var (monoSec, monoNs) = ProcessCalls.Clock(1);
        var (bootSec, bootNs) = ProcessCalls.Clock(7);
        Write(ImageKinds.Timens, ImageKinds.Timens.FileNameFor(0), new timens_entry
        {
            Monotonic = new timespec { TvSec = (ulong)monoSec, TvNsec = (ulong)monoNs },
            Boottime = new timespec { TvSec = (ulong)bootSec, TvNsec = (ulong)bootNs },
        });
        Write(ImageKinds.Inventory, ImageKinds.Inventory.FileName, new inventory_entry
        {
            ImgVersion = 2,
            FdinfoPerId = true,
            RootIds = RootIds,
            NsPerId = true,
            RootCgSet = 1,
            Lsmtype = lsmtype.NoLsm,
            NetworkLockMethod = (uint)options.NetworkLock,
            PluginsEntry = new plugins_entry(),
            DumpCriuRunId = runId,
        });

        var frozen = clock.Elapsed - frozenAt;
        long scanned = processes.Sum(p => p.PagesScanned);
        Write(ImageKinds.Stats, "stats-dump", new stats_entry
        {
            Dump = new dump_stats_entry
            {
                FreezingTime = (uint)(frozenAt.TotalMilliseconds * 1000),
                FrozenTime = (uint)(frozen.TotalMilliseconds * 1000),
                MemdumpTime = (uint)(pages.ReadTime.TotalMilliseconds * 1000),
                MemwriteTime = (uint)(pages.WriteTime.TotalMilliseconds * 1000),
                PagesScanned = (ulong)scanned,
                PagesSkippedParent = 0,
                PagesWritten = (ulong)pagesWritten,
                IrmapResolve = 0,
                PagesLazy = 0,
                PagePipes = 0,
                PagePipeBufs = 0,
                ShpagesScanned = 0,
                ShpagesSkippedParent = 0,
                ShpagesWritten = 0,
            },
        });
        long bytes = written.Sum(f => new FileInfo(f).Length);
        log.Info($"dumped {processes.Count} process(es), {pagesWritten} pages, {bytes} bytes of images; frozen {frozen.TotalMilliseconds:F1} ms");
        return new DumpResult(processes.Count, processes.Sum(p => p.Cores.Count), pagesWritten, scanned, frozen, bytes);
    }
}
