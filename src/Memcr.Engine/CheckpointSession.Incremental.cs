using Memcr.Engine.Incremental;
using Memcr.Image;
using Memcr.Linux;
using Memcr.Linux.Memory;
using Memcr.Linux.Proc;
using Memcr.Linux.Ptrace;

namespace Memcr.Engine;

public sealed partial class CheckpointSession
{
    /// <summary>The older image was renamed to make way for this checkpoint's image (renamed back if the checkpoint fails).</summary>
    private string? _demoted;

    /// <summary>Why incremental checkpoints cannot work on this kernel, or null when they can.</summary>
    public static string? IncrementalUnavailable()
    {
        using (var scanner = new PagemapScanner(Environment.ProcessId))
        {
            if (scanner.ScanWrites(0x10000, 0x20000) is null)
                return "this kernel has no PAGEMAP_SCAN (Linux 6.7+): written pages cannot be told apart";
        }
        ulong offered;
        try
        {
            using var uffd = UserFaultFd.Create(UserFaultFd.CreateFlags | TargetFds.UserModeOnly, "memcr");
            offered = uffd.Enable(0);
        }
        catch (SyscallException e)
        {
            return $"{e.Message}: writes cannot be tracked";
        }
        return (offered & UserFaultFd.FeatureWriteProtectAsync) == 0
            ? "this kernel's userfaultfd lacks UFFD_FEATURE_WP_ASYNC (Linux 6.7+): writes cannot be tracked"
            : null;
    }

    /// <summary>
    /// Ends the write tracking of a running process (the user says it is back for good): closes
    /// its descriptor of the tracking userfaultfd and removes its kept images. Returns false when
    /// nothing was tracked for it in <paramref name="dumpDir"/>. Throws
    /// <see cref="CheckpointException"/>, with nothing removed, when the process cannot be seized
    /// (another memcr holds it, for one).
    /// </summary>
    public static bool Forget(int pid, string dumpDir, Log log)
    {
        TrackState? state;
        try
        {
            state = TrackState.Read(dumpDir, pid);
        }
        catch (InvalidDataException e)
        {
            log.Error(e.Message);
            state = new TrackState(pid, 0, 0, -1);
        }
        if (state is null)
            return false;
        if (state.IsOfLiveProcess() && ProcFds.IsUserFaultFd(pid, state.Fd))
        {
            try
            {
                TargetFds.Close(pid, state.Fd, log);
            }
            catch (SyscallException e)
            {
                throw new CheckpointException($"cannot end the write tracking of pid {pid}: {e.Message}; nothing was changed", e);
            }
        }
        RemoveKept(dumpDir, pid, log, newest: true);
        log.Info($"write tracking of pid {pid} ended; its kept images removed");
        return true;
    }

    /// <summary>
    /// Removes what write tracking left in <paramref name="dumpDir"/> for processes that have
    /// exited (the tracking itself went with them); returns their pids.
    /// </summary>
    public static List<int> SweepExited(string dumpDir, Log log)
    {
        var gone = new List<int>();
        foreach (int pid in TrackState.Pids(dumpDir))
        {
            TrackState? state;
            try
            {
                state = TrackState.Read(dumpDir, pid);
            }
            catch (Exception e) when (e is InvalidDataException or IOException)
            {
                continue;
            }
            if (state is null || state.IsOfLiveProcess())
                continue;
            RemoveKept(dumpDir, pid, log, newest: true);
            gone.Add(pid);
        }
        return gone;
    }

    /// <summary>
    /// With the target seized, before anything is scanned: finds what an earlier restore left for
    /// it (its write tracking and kept images). For an incremental checkpoint returns the chain to
    /// take this one over, when it can be used; otherwise ends the tracking and removes the images,
    /// so that this checkpoint is a full one. <paramref name="trackingFd"/>: the process's
    /// descriptor of the tracking userfaultfd that goes with the chain.
    /// </summary>
    private ImageChain? TakeStock(out int trackingFd)
    {
        trackingFd = -1;
        TrackState? state;
        try
        {
            state = TrackState.Read(_options.DumpDir, Pid);
        }
        catch (Exception e) when (e is InvalidDataException or IOException or UnauthorizedAccessException)
        {
            _log.Error($"{e.Message}: a full checkpoint");
            ForgetChain();
            return null;
        }
        if (state is null)
            return null;
        if (!state.IsOfLiveProcess())
        {
            _log.Info($"removing the kept images of an earlier process {Pid} (this one has another start time)");
            ForgetChain();
            return null;
        }
        if (!ProcFds.IsUserFaultFd(Pid, state.Fd))
        {
            _log.Info($"pid {Pid} closed the descriptor that tracked its writes (fd {state.Fd}): a full checkpoint");
            ForgetChain();
            return null;
        }
        if (!_options.Incremental)
        {
            _log.Info($"not incremental: ending the write tracking of pid {Pid} and removing its kept images");
            EndTracking(state.Fd);
            return null;
        }
        try
        {
            var chain = ImageChain.Open(ImagePath, state.ImageId, Pid, _key);
            _log.Info($"incremental over {chain.Images.Count} kept {(chain.Images.Count == 1 ? "image" : "images")} ({chain.FileBytes / 1024} kB)");
            trackingFd = state.Fd;
            return chain;
        }
        catch (Exception e) when (e is ImageFormatException or IOException or UnauthorizedAccessException)
        {
            _log.Error($"the kept images of pid {Pid} cannot be used ({(e is ImageFormatException f ? f.Message : e.Message)}): a full checkpoint");
            EndTracking(state.Fd);
            return null;
        }
    }

    /// <summary>
    /// Plans an incremental checkpoint over <paramref name="chain"/>, or a full one when the chain
    /// would grow too long (<see cref="ImageChain.MaxImages"/>) or hold more than twice what the
    /// process has to save: then the chain is compacted, which is to say replaced by one full image.
    /// </summary>
    private ImageDump.CheckpointPlan PlanOver(ImageDump dump, List<SelectedVma> selected, ImageChain chain, int trackingFd)
    {
        var plan = dump.Plan(selected, chain.Pages());
        ulong needed = plan.Bytes + PageRanges.Bytes(plan.Kept!);
        string? compact = chain.Images.Count >= ImageChain.MaxImages ? $"{chain.Images.Count} images"
            : (ulong)chain.FileBytes + plan.Bytes > 2 * needed ? $"{(chain.FileBytes + (long)plan.Bytes) >> 10} kB for {needed >> 10} kB of memory"
            : null;
        if (compact is null)
        {
            dump.Parent = (chain.Newest.Header.ImageId, chain.Newest.Header.ChainDepth + 1);
            return plan;
        }
        _log.Info($"compacting the chain ({compact}): a full checkpoint");
        EndTracking(trackingFd);
        return dump.Plan(selected);
    }

    /// <summary>Moves the newest kept image aside (pages-PID.ID.img) so that this checkpoint's image takes its name.</summary>
    private void Demote(ImageChain chain)
    {
        string older = ImageChain.OlderPath(_options.DumpDir, Pid, chain.Newest.Header.ImageId);
        File.Move(ImagePath, older, overwrite: true);
        _demoted = older;
    }

    /// <summary>A failed incremental checkpoint: its older image takes its name back, and the tracking goes on.</summary>
    private void Promote()
    {
        if (_demoted is null)
            return;
        try
        {
            File.Move(_demoted, ImagePath, overwrite: true);
        }
        catch (IOException e)
        {
            _log.Error($"cannot move {_demoted} back to {ImagePath}: {e.Message}");
        }
        _demoted = null;
    }

    /// <summary>Closes the process's descriptor of the tracking userfaultfd (which ends the tracking) and removes the kept images.</summary>
    private void EndTracking(int fd)
    {
        if (ProcFds.IsUserFaultFd(Pid, fd))
            TargetFds.Close(_tracer, fd, _log);
        ForgetChain();
    }

    /// <summary>Removes the kept images of the process (not this checkpoint's own image) and its tracking state.</summary>
    private void ForgetChain() => RemoveKept(_options.DumpDir, Pid, _log, newest: _demoted is null && !_imageExists);

    /// <summary>Removes the older images of <paramref name="pid"/>'s chain, with <paramref name="newest"/> the newest too, and its tracking state.</summary>
    internal static void RemoveKept(string dumpDir, int pid, Log log, bool newest)
    {
        ImageChain.DeleteOlder(dumpDir, pid, log.Error);
        if (newest)
            LazySession.DeleteFiles(Path.Combine(dumpDir, $"pages-{pid}.img"), log);
        TrackState.Delete(dumpDir, pid, log.Error);
    }

    /// <summary>
    /// After the restore wrote every page and before the process runs: tracks its writes in the
    /// ranges the image covers (<see cref="WriteTracking"/>), so that the next checkpoint saves only
    /// what was written, and records the process's descriptor of the tracking userfaultfd next to
    /// the images. Returns false, with the kept images removed, when the tracking cannot be set up:
    /// the restore itself is unaffected.
    /// </summary>
    private bool ArmTracking(IReadOnlyList<ImageVma> vmas)
    {
        TrackState? previous = null;
        try
        {
            previous = TrackState.Read(_options.DumpDir, Pid);
        }
        catch (Exception e) when (e is InvalidDataException or IOException)
        {
            _log.Debug(e.Message);
        }
        return ArmTracking(_tracer, _options.DumpDir, _imageId, previous?.Fd ?? -1, WriteTracking.Spans(vmas), null, _log);
    }

    /// <summary>
    /// Tracks the writes of the seized process (<see cref="WriteTracking.Arm"/>) and records it for
    /// the next checkpoint; false, with the kept images of the process removed, when it cannot.
    /// </summary>
    internal static bool ArmTracking(Tracer tracer, string dumpDir, ulong imageId, int previousFd, IReadOnlyList<(ulong Start, ulong End)> ranges, IReadOnlyList<KeptRange>? written, Log log)
    {
        int pid = tracer.Pid;
        int targetFd = -1;
        try
        {
            targetFd = WriteTracking.Arm(tracer, previousFd, ranges, written, log);
            new TrackState(pid, ProcFs.ReadStartTime(pid), imageId, targetFd).Write(dumpDir);
            return true;
        }
        catch (Exception e) when (e is SyscallException or IOException or UnauthorizedAccessException or ProcessGoneException)
        {
            log.Error($"cannot track the writes of pid {pid}: {e.Message}; its next checkpoint is a full one");
            if (targetFd >= 0 && tracer.IsAlive)
                TargetFds.Close(tracer, targetFd, log);
            RemoveKept(dumpDir, pid, log, newest: true);
            return false;
        }
    }
}
