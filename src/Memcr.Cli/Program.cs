using System.Diagnostics;
using System.Reflection;
using System.Runtime.InteropServices;
using Memcr.Cli;
using Memcr.Engine;
using Memcr.Engine.Lazy;
using Memcr.Image;
using Memcr.Linux;
using Memcr.Linux.Memory;
using Memcr.Linux.Proc;
using Memcr.Service;

return MemcrProgram.Run(args);

internal static class MemcrProgram
{
    public static string VersionText =>
        $"memcr {typeof(MemcrProgram).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion.Split('+')[0] ?? "?"} ({RuntimeInformation.ProcessArchitecture.ToString().ToLowerInvariant()}, .NET NativeAOT)";

    public static int Run(string[] args)
    {
        if (args is [Memcr.Dump.Restoring.TreeRestorer.HelperVerb])
        {
            // The restore helper: memcr seizes it and makes the root process by a clone3 in it.
            Memcr.Linux.Kernel.ProcessCalls.Pause();
        }
        string invokedAs = Path.GetFileName(Environment.GetCommandLineArgs()[0]);
        if (invokedAs == "criu" && args.Length > 0 && args[0] is "dump" or "restore" or "check")
            return CriuTool.Run(args[0], args[1..], "criu");
        if (args.Length > 0 && args[0] is "dump" or "restore" or "check")
            return CriuTool.Run(args[0], args[1..]);
        if (args.Length > 0 && args[0] == "image")
            return ImageTool.Run(args[1..]);
        if (args.Length > 0 && args[0] == "crit")
            return CritTool.Run(args[1..]);
        // Run as `crit` (a symlink), the binary is CRIU's image tool.
        if (invokedAs == "crit")
            return CritTool.Run(args, "crit");
        MemcrArguments a;
        try
        {
            a = MemcrArguments.Parse(args);
        }
        catch (GetOptException e)
        {
            Console.Error.WriteLine($"memcr: {e.Message}");
            Console.Error.WriteLine("Try 'memcr --help' for more information.");
            return 1;
        }
        if (a.Help)
        {
            Console.Out.WriteLine(MemcrArguments.Usage);
            return 0;
        }
        if (a.Version)
        {
            Console.Out.WriteLine(VersionText);
            return 0;
        }
        if (a.Listen is not null && a.Pid is not null)
        {
            Console.Error.WriteLine("memcr: -p and -l cannot be combined: -l makes memcr a service that takes pids from its clients");
            return 1;
        }
        if (a.Listen is null && (a.ListenGid is not null || a.ListenAddress is not null))
        {
            Console.Error.WriteLine("memcr: -g and --listen-address go with -l");
            return 1;
        }
        if (a.Listen is null && a.Pid is not int)
        {
            Console.Error.Write(MemcrArguments.Usage);
            Console.Error.WriteLine();
            Console.Error.WriteLine("memcr: a target is required: -p PID");
            return 1;
        }

        byte[]? key = null;
        if (a.KeyFile is not null)
        {
            try
            {
                key = ImageKey.Load(a.KeyFile, a.Encryption);
            }
            catch (ImageKeyException e)
            {
                Console.Error.WriteLine($"memcr: {e.Message}");
                return 1;
            }
        }

        var log = new Log(Console.Out, a.Verbose);
        log.Info(VersionText);
        if (a.Listen is not null)
            return ServiceProgram.Run(a, key, log);
        int pid = a.Pid!.Value;
        if (a.ParasiteSocketDir is not null)
            log.Debug($"-S {a.ParasiteSocketDir}: no parasite socket is used");
        var options = a.ToCheckpointOptions(pid, key);
        if (a.Forget)
            return Forget(pid, a.DumpDir, log);
        if (UnfinishedLazyRestore(options) is { } unfinished)
        {
            log.Error(unfinished);
            return 1;
        }
        foreach (int exited in CheckpointSession.SweepExited(options.DumpDir, log))
            log.Info($"removed the kept images of pid {exited}, which has exited");
        var lazy = a.Lazy;
        if (lazy != LazyMode.Off && LazyRestore.Refusal(pid) is { } refusal)
        {
            if (lazy == LazyMode.On)
            {
                log.Error($"--lazy refused: {refusal}; nothing was done (--lazy=auto restores eagerly instead)");
                return 1;
            }
            log.Info($"{refusal}: the restore will be eager");
            lazy = LazyMode.Off;
        }

        using var interrupted = new CancellationTokenSource();
        int caught = 0;
        void OnSignal(PosixSignalContext context)
        {
            context.Cancel = true;
            caught = (int)context.Signal;
            interrupted.Cancel();
        }
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);
        using var sighup = PosixSignalRegistration.Create(PosixSignal.SIGHUP, OnSignal);

        try
        {
            using var timeout = new CancellationTokenSource();
            if (a.Timeout is { } limit)
                timeout.CancelAfter(limit);
            using var cancel = CancellationTokenSource.CreateLinkedTokenSource(interrupted.Token, timeout.Token);
            CheckpointSession session;
            try
            {
                session = CheckpointSession.Checkpoint(options, log, cancel.Token);
            }
            catch (OperationCanceledException) when (timeout.IsCancellationRequested && !interrupted.IsCancellationRequested)
            {
                log.Error($"checkpoint timed out after {a.Timeout!.Value.TotalSeconds:0.###} s: abandoned, pid {pid} left running untouched");
                return 1;
            }
            using var held = session;
            if (!a.NoWait)
            {
                // Parked for as long as the user likes: hold no more memory than waiting needs.
                MemoryTrim.Now();
                WaitForEnter(session, log, interrupted.Token);
            }
            if (lazy != LazyMode.Off && RestoreLazily(session, options, a.KeyFile is not null, log) is { } code)
                return code;
            session.Restore();
            return 0;
        }
        catch (OperationCanceledException)
        {
            log.Error($"interrupted by signal {caught}: checkpoint abandoned, pid {pid} left running untouched");
            return 1;
        }
        catch (Exception e)
        {
            log.Error(e is TargetTerminatedException ? $"{e.Message}; image removed" : e.Message);
            if (a.Verbose)
                Console.Error.WriteLine(e);
            return 1;
        }
    }

    /// <summary>
    /// Resumes the target at once and waits until all its pages are back; null when a lazy
    /// restore could not be set up after all (nothing changed: the caller restores eagerly). While
    /// it runs, a journal entry in the dump directory names the target's userfaultfd, so that a
    /// memcr service started there after this memcr died finishes the restore.
    /// </summary>
    private static int? RestoreLazily(CheckpointSession session, CheckpointOptions options, bool persistentKey, Log log)
    {
        var since = DateTimeOffset.UtcNow;
        void Journaled(int fd)
        {
            try
            {
                Journal.Write(options.DumpDir, JournalEntry.Of(session, options, persistentKey, since) with { LazyFd = fd });
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or ProcessGoneException)
            {
                log.Error($"cannot write the journal of this lazy restore: {e.Message}; should this memcr die, nothing could finish it");
            }
        }
        LazySession? lazy;
        try
        {
            lazy = session.RestoreLazily(Journaled);
        }
        catch (LazyRestoreUnavailableException e)
        {
            log.Error($"{e.Message}; restoring eagerly");
            return null;
        }
        catch (CheckpointException)
        {
            Journal.Delete(options.DumpDir, session.Pid); // the process was killed: nothing to take over
            throw;
        }
        if (lazy is null)
            return 0;
        using (lazy)
        {
            try
            {
                return Serve(lazy, log) ? 0 : 1;
            }
            finally
            {
                lazy.Finish();
                Journal.Delete(options.DumpDir, session.Pid);
            }
        }
    }

    /// <summary>memcr -p PID --forget: ends the write tracking of PID.</summary>
    private static int Forget(int pid, string dumpDir, Log log)
    {
        try
        {
            if (!CheckpointSession.Forget(pid, dumpDir, log))
                log.Info($"pid {pid} has no write tracking in {dumpDir}: nothing to forget");
            return 0;
        }
        catch (CheckpointException e)
        {
            log.Error(e.Message);
            return 1;
        }
    }

    /// <summary>Waits until every page of a lazy restore is back; false (having said why) if the process went or the image failed.</summary>
    internal static bool Serve(LazySession lazy, Log log)
    {
        TimeSpan took;
        try
        {
            took = lazy.WaitFilled();
        }
        catch (Exception e) when (e is ImageFormatException or IOException)
        {
            return false; // Finish kills the target and says why
        }
        if (!lazy.TargetAlive)
        {
            log.Error($"pid {lazy.Pid} has gone during the lazy restore; image removed");
            return false;
        }
        log.Info($"restore complete: {lazy.TotalBytes >> 20} MiB in {(long)took.TotalMilliseconds} ms, {lazy.PagesOnDemand} pages on demand");
        return true;
    }

    /// <summary>What to do about a process whose lazy restore is unfinished (its memcr died), if the journal in the dump directory says it is one.</summary>
    private static string? UnfinishedLazyRestore(CheckpointOptions options)
    {
        if (Journal.Read(options.DumpDir, options.Pid) is not { Lazy: true } entry)
            return null;
        try
        {
            if (ProcFs.ReadStartTime(options.Pid) != entry.StartTime)
                return null;
        }
        catch (ProcessGoneException)
        {
            return null;
        }
        return $"pid {options.Pid} is waiting for pages of a lazy restore whose memcr died (journal {Journal.PathFor(options.DumpDir, options.Pid)}): "
            + $"start a memcr service on that directory (memcr -l PORT|PATH -d {options.DumpDir}) and it finishes the restore; nothing was done";
    }

    private static void WaitForEnter(CheckpointSession session, Log log, CancellationToken interrupted)
    {
        log.Milestone("--> press enter to restore process memory and unfreeze <--");
        long start = Stopwatch.GetTimestamp();
        while (!interrupted.IsCancellationRequested)
        {
            if (FileOps.WaitReadable(0, 100))
            {
                FileOps.ReadByte(0);
                break;
            }
            session.Poll();
        }
        if (interrupted.IsCancellationRequested)
            log.Info("interrupted: restoring the target before exiting");
        var slept = Stopwatch.GetElapsedTime(start);
        log.Info($"slept for {(int)slept.TotalHours:00}:{slept.Minutes:00}:{slept.Seconds:00}.{slept.Milliseconds:000} ({(long)slept.TotalMilliseconds} ms)");
    }
}
