using Memcr.Engine.Incremental;
using Memcr.Engine.Lazy;
using Memcr.Image;
using Memcr.Linux;
using Memcr.Linux.Proc;
using Memcr.Linux.Ptrace;

namespace Memcr.Engine;

/// <summary>
/// A process that runs again while its pages come back (<see cref="CheckpointSession.RestoreLazily"/>,
/// or <see cref="TakeOver"/> of a restore whose memcr died). The process keeps its own copy of
/// the userfaultfd, fd <see cref="TargetFd"/>, until every page is back: should memcr die, its
/// faults wait rather than read zeros, and a new memcr takes the descriptor from it and finishes.
/// </summary>
public sealed class LazySession : IDisposable
{
    private readonly LazyRestore _lazy;
    private readonly LazyImages _images;
    private readonly CheckpointOptions _options;
    private readonly bool _tracking;
    private readonly Log _log;
    private bool _finished;

    internal LazySession(int pid, int targetFd, CheckpointOptions options, LazyImages images, LazyRestore lazy, bool tracking, Log log)
    {
        Pid = pid;
        TargetFd = targetFd;
        _options = options;
        _images = images;
        _lazy = lazy;
        _tracking = tracking;
        _log = log;
    }

    public int Pid { get; }

    /// <summary>The process's own copy of the userfaultfd, closed when the restore ends.</summary>
    public int TargetFd { get; }

    /// <summary>Bytes owed when the process resumed (or when the restore was taken over).</summary>
    public ulong TotalBytes => _lazy.TotalBytes;

    /// <summary>Pages copied because a thread of the process was waiting for them.</summary>
    public long PagesOnDemand => _lazy.PagesOnDemand;

    /// <summary>Whether the process is still there.</summary>
    public bool TargetAlive => _lazy.TargetAlive;

    /// <summary>Waits until every page is back (or the process has gone); throws what stopped the serving.</summary>
    public TimeSpan WaitFilled() => _lazy.WaitFilled();

    /// <summary>Waits up to <paramref name="timeoutMs"/>; true once every page is back or the serving has stopped.</summary>
    public bool Filled(int timeoutMs) => _lazy.Filled(timeoutMs);

    /// <summary>
    /// Takes over the lazy restore of <paramref name="options"/>'s pid, whose memcr died: takes the
    /// userfaultfd from the process (its fd <paramref name="targetFd"/>), works out from the images
    /// and the ledger what is still owed, and serves it. The process is let run if the memcr that
    /// died had not done so yet. Throws <see cref="CheckpointException"/> with nothing changed
    /// when it cannot.
    /// </summary>
    public static LazySession TakeOver(CheckpointOptions options, ulong imageId, int targetFd, Log log)
    {
        int pid = options.Pid;
        if (!ProcFds.IsUserFaultFd(pid, targetFd))
        {
            string link = ProcFds.Link(pid, targetFd);
            throw new CheckpointException($"cannot take over the lazy restore of pid {pid}: its fd {targetFd} is not a userfaultfd ({(link.Length == 0 ? "no such fd" : link)})");
        }
        LazyImages images;
        try
        {
            images = new LazyImages(ImageChain.Open(options.ImagePath, imageId, pid, options.Key));
        }
        catch (Exception e) when (e is ImageFormatException or IOException or UnauthorizedAccessException)
        {
            throw new CheckpointException($"cannot take over the lazy restore of pid {pid}: {e.Message}", e);
        }
        RecordSource? source = null;
        try
        {
            var pending = LazyLedger.Replay(options.ImagePath, images);
            if (pending is null)
            {
                log.Error($"no ledger {LazyLedger.PathFor(options.ImagePath)}: every page of the image not yet back is given back, also where pid {pid} discarded it meanwhile");
                var registered = LazyRestore.Registered(pid);
                pending = new PendingPages(images.Owed(null)
                    .Where(e => registered.Any(r => r.Start < e.End && e.Start < r.End)));
            }
            // The memcr that died tracked writes from the start (--incremental) if it registered in write-protect mode too.
            bool writeProtect = LazyRestore.TracksWrites(pid);
            source = new RecordSource(images, options.KeepImageCached);
            source.Prepare();
            var fd = TargetFds.TakeUserFaultFd(pid, targetFd);
            LetRun(pid, log);
            var lazy = new LazyRestore(pid, images, source, fd, pending, LazyLedger.Reopen(options.ImagePath, log.Error), writeProtect, options, log);
            source = null; // the restore's now
            lazy.Start();
            // Faults the memcr that died had read but not answered: raised again, to this one.
            lazy.WakeAll();
            log.Info($"lazy restore taken over: {pending.Bytes >> 20} MiB at most still owed");
            return new LazySession(pid, targetFd, options, images, lazy, writeProtect && options.Incremental, log);
        }
        catch (Exception e) when (e is ImageFormatException or IOException or SyscallException or ProcessGoneException)
        {
            source?.Dispose();
            images.Dispose();
            throw new CheckpointException($"cannot take over the lazy restore of pid {pid}: {e.Message}", e);
        }
    }

    /// <summary>A process left in its group stop (its memcr died between writing the journal and letting it run) runs.</summary>
    private static void LetRun(int pid, Log log)
    {
        if (ProcFs.ReadStatus(pid).State != 'T')
            return;
        using var tracer = Tracer.Seize(pid, log.Debug);
        if (tracer.WasGroupStopped)
            tracer.TakeOverGroupStop();
        tracer.Detach();
    }

    /// <summary>
    /// Ends the restore once <see cref="WaitFilled"/> has returned: takes the process's mappings off
    /// the userfaultfd, closes its copy of it (a remote close on the briefly seized process), stops
    /// serving and removes the images and the ledger; with --incremental, the process's writes are
    /// tracked from here by a userfaultfd of their own and the images kept for its next checkpoint.
    /// If the serving failed (a damaged record) while the process lives, the process is killed:
    /// pages it has not got would read as zeros.
    /// </summary>
    public void Finish()
    {
        if (_finished)
            return;
        _finished = true;
        bool kept = false;
        try
        {
            if (_lazy.Failure is { } why && _lazy.TargetAlive)
            {
                Signals.Kill(Pid);
                _log.Error($"cannot restore pid {Pid}: {why.Message}; pid {Pid} was killed with SIGKILL because its memory cannot be given back");
            }
            else if (_lazy.TargetAlive && _tracking)
                kept = KeepTracking();
            else if (_lazy.TargetAlive)
            {
                _lazy.Unregister();
                TargetFds.Close(Pid, TargetFd, _log);
            }
        }
        finally
        {
            _lazy.Dispose();
            _images.Dispose();
            LazyLedger.Delete(_options.ImagePath);
            if (kept)
                _log.Info($"images kept in {_options.DumpDir}: the next incremental checkpoint of pid {Pid} saves only what it wrote since it resumed");
            else
                CheckpointSession.RemoveKept(_options.DumpDir, Pid, _log, newest: true);
        }
    }

    /// <summary>
    /// With the process seized: reads which pages it wrote while they came back (the served ranges
    /// were write-protected as they were copied in), takes its mappings off the restore's
    /// userfaultfd and closes that (its events would otherwise hold up the process's munmap and fork
    /// with no memcr to read them), and tracks its writes from here as after an eager restore,
    /// those pages counting as written. False, with the process's mappings off the userfaultfd
    /// all the same, when the tracking cannot go on.
    /// </summary>
    private bool KeepTracking()
    {
        Tracer tracer;
        try
        {
            tracer = Tracer.Seize(Pid, _log.Debug);
        }
        catch (Exception e) when (e is ProcessGoneException or SyscallException)
        {
            _log.Error($"cannot seize pid {Pid} to go on tracking its writes: {e.Message}; its next checkpoint is a full one");
            _lazy.Unregister();
            return false;
        }
        using (tracer)
        {
            var spans = WriteTracking.Spans(_images.Newest.Vmas);
            List<KeptRange>? written = null;
            try
            {
                written = WriteTracking.Written(Pid, spans);
            }
            catch (Exception e) when (e is SyscallException or ProcessGoneException)
            {
                _log.Error($"cannot read which pages pid {Pid} wrote: {e.Message}; its next checkpoint is a full one");
            }
            _lazy.Unregister();
            TargetFds.Close(tracer, TargetFd, _log);
            return written is not null && tracer.IsAlive
                && CheckpointSession.ArmTracking(tracer, _options.DumpDir, _images.Newest.Header.ImageId, -1, WriteTracking.Mapped(Pid, spans), written, _log);
        }
    }

    internal static void DeleteFiles(string imagePath, Log log)
    {
        LazyLedger.Delete(imagePath);
        try
        {
            File.Delete(imagePath);
        }
        catch (IOException e)
        {
            log.Error($"cannot remove {imagePath}: {e.Message}");
        }
    }

    public void Dispose() => Finish();
}
