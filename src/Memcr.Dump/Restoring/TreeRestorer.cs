using System.Diagnostics;
using Memcr.Linux;
using Memcr.Linux.Kernel;
using Memcr.Linux.Memory;
using Memcr.Linux.Proc;
using Memcr.Linux.Ptrace;

namespace Memcr.Dump.Restoring;

/// <summary>
/// memcr restore: makes the dumped tree again from its images, same pids, and lets it run. Nothing
/// is injected and the .NET process never forks: a helper (memcr itself, started with
/// posix_spawn and seized) makes the root with a remote clone3(CLONE_PARENT, set_tid), so the
/// root is memcr's child; the rest is made by remote syscalls in the new processes. A failure
/// kills everything made so far and leaves the images as they are, so the restore can be
/// retried. All ptrace work happens on the calling thread.
/// </summary>
public static class TreeRestorer
{
    public const string HelperVerb = "__restore-helper";

    /// <summary>Restores the tree; returns 0 with -d, else the root's exit status once it ends.</summary>
    public static int Restore(RestoreOptions options, CriuLog log)
    {
        int root = Make(options, log);
        if (options.Detach)
            return 0;
        // Waiting may last for days: give back the page buffers and whatever else the making took.
        GC.Collect(2, GCCollectionMode.Aggressive, blocking: true, compacting: true);
        var status = ProcessCalls.WaitChild(root);
        log.Info($"pid {root} {status}");
        return status.Exited ? status.ExitCode : 128 + status.TermSignal;
    }

    /// <summary>
    /// The rebuilt TCP connections leave repair mode, then the dump's network lock goes (ours or
    /// CRIU's: named after the dump's run id): the processes run next, and their peers' packets
    /// reach them again.
    /// </summary>
    private static void ResumeConnections(DumpImages images, RestorerFiles files, CriuLog log)
    {
        files.Sockets.Resume();
        if (images.Inventory.NetworkLockMethod != (uint)NetworkLockMethod.Nftables || images.Inventory.DumpCriuRunId is not { Length: > 0 } runId)
            return;
        string table = Sockets.NetworkLock.TableOf(runId);
        try
        {
            if (Sockets.NetworkLock.Remove(table))
                log.Info($"network lock {table} removed");
        }
        catch (CriuModeException e)
        {
            log.Error($"{e.Message}: the restored connections stay blocked until it is removed (nft delete table inet {table})");
        }
    }

    /// <summary>Makes the tree and lets it run; returns the root's pid. Every buffer and file of the making is released by then.</summary>
    private static int Make(RestoreOptions options, CriuLog log)
    {
        var clock = Stopwatch.StartNew();
        // Remote syscalls pin a task to our CPU while they run, and what it clones then inherits
        // the pin: every restored thread gets our own mask back before it is let go.
        var cpus = CpuAffinity.OfCallingThread();
        var images = DumpImages.Read(options.Dir);
        RestoreChecks.Run(images, options);
        if (images.Locks.Count > 0 && !options.FileLocks)
            log.Warn($"{images.Locks.Count} file lock(s) in {options.Dir} are left out: restore them with --file-locks (-l), as with CRIU");
        string helperPath = options.HelperPath ?? throw new CriuModeException("the path of the memcr binary is unknown: it is needed as the restore helper");
        RestorerFiles files;
        try
        {
            files = RestorerFiles.Open(images, options, log);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or CriuModeException)
        {
            throw new CriuModeException($"cannot restore from {options.Dir}: cannot make the tree's files again: {e.Message}; nothing was restored", e);
        }
        using var ownedFiles = files;
        using var buffers = new BufferPool(Environment.ProcessorCount + 4, PageLoader.PieceBytes);
        var ctx = new RestoreContext(images, files, options, log, buffers);
        var root = images.Root;
        Tracer? helper = null;
        try
        {
            int helperPid = ProcessCalls.Spawn(helperPath, [HelperVerb]);
            helper = Tracer.Seize(helperPid, log.Debug, PtraceOptions.TraceFork | PtraceOptions.ExitKill);
            using (var memory = new RemoteMemory(helperPid))
            {
                ulong insn = RemoteSyscall.FindSyscallInstruction(helperPid, ProcFs.ReadMaps(helperPid), ctx.Arch, memory);
                using var remote = RemoteTask.Open(helper, ctx.Arch, memory, insn, helperPid);
                remote.MapScratch(4096);
                // With CLONE_PARENT the exit signal must be 0: the root takes the helper's (SIGCHLD, to memcr).
                ProcessBuilder.Clone(remote, root.Pid, ProcessBuilder.CloneParent, 0);
            }
            var rootTracer = Tracer.Adopt(root.Pid, log.Debug);
            // Killed and reaped (memcr is its tracer and parent); the root is now memcr's child.
            helper.Kill();
            helper = null;
            new ProcessBuilder(ctx).Build(root, rootTracer, null);
            files.SealMemfds();

            if (options.ShellJob && files.Terminal is { } tty && root.Tree.Pgid == root.Tree.Pid)
                ProcessCalls.SetForegroundGroup(tty, root.Pid); // ^C and ^Z go to the restored job
            // A process dumped stopped (SIGSTOP) is stopped again before it is let go.
            foreach (var p in images.Processes.Where(p => p.Leader.Tc?.TaskState == 6))
                ProcessCalls.Stop(p.Pid);
            ResumeConnections(images, files, log);
            files.Sockets.SendUnsent();
            if (options.PidFile is { } pidFile)
                File.WriteAllText(pidFile, root.Pid.ToString(System.Globalization.CultureInfo.InvariantCulture));
            foreach (var t in ctx.Made)
            {
                foreach (var thread in t.Threads)
                {
                    if (cpus is not null && !CpuAffinity.Reset(thread.Tid, cpus))
                        log.Warn($"pid {t.Pid}: thread {thread.Tid} keeps the CPU it was restored on: sched_setaffinity failed");
                }
                t.Release();
            }
        }
        catch (Exception e)
        {
            helper?.Kill();
            foreach (var t in ctx.Made)
            {
                try
                {
                    t.Kill();
                }
                catch (Exception kill) when (kill is SyscallException or ProcessGoneException)
                {
                    log.Warn($"pid {t.Pid}: {kill.Message}");
                }
            }
            string why = e switch
            {
                CriuModeException c => c.Message,
                ProcessGoneException g => $"a restored process died: {g.Message}",
                _ => e.Message,
            };
            throw new CriuModeException($"cannot restore the tree of pid {root.Pid} from {options.Dir}: {why}; the partly restored processes were killed, the images are unchanged", e);
        }
        log.Info($"restored {images.Processes.Count} process(es) in {clock.Elapsed.TotalMilliseconds:F1} ms ({ctx.Pages.PagesWritten} pages written, {ctx.Pages.PagesShared} shared with a parent)");
        return root.Pid;
    }
}
