using System.Diagnostics;
using System.Security.Cryptography;
using Memcr.Engine.Incremental;
using Memcr.Image;
using Memcr.Linux;
using Memcr.Linux.Arch;
using Memcr.Linux.Memory;
using Memcr.Linux.Proc;
using Memcr.Linux.Ptrace;

namespace Memcr.Engine;

/// <summary>
/// One checkpointed process: frozen, its memory saved to an image and dropped, until
/// <see cref="Restore"/> writes it back and lets it run. Must be used from one thread from
/// <see cref="Checkpoint"/> to <see cref="Restore"/> (that thread is the ptrace tracer).
/// </summary>
public sealed partial class CheckpointSession : IDisposable
{
    private readonly CheckpointOptions _options;
    private readonly Log _log;
    private readonly Tracer _tracer;
    private readonly RemoteMemory _memory;
    private readonly CpuArchitecture _arch = CpuArchitecture.Current;
    private readonly ulong _imageId;
    private readonly byte[]? _key;
    /// <summary>Runs of adjacent VMAs that had pages to save: what is dropped (a few, for tens of thousands of VMAs).</summary>
    private List<(ulong Start, ulong End)> _dropSpans = [];
    private int _dropVmas;
    private bool _dropped;
    private bool _imageExists;
    private bool _over;

    private CheckpointSession(CheckpointOptions options, Log log, Tracer tracer, ulong? imageId = null)
    {
        _imageId = imageId ?? NewImageId();
        _options = options;
        _log = log;
        _tracer = tracer;
        _memory = new RemoteMemory(options.Pid);
        _key = options.Key;
        if (options.Encryption != Encryption.None && imageId is null)
        {
            // Without a key file the key is random and lives only in this process, like the original's.
            _key = options.Key ?? RandomNumberGenerator.GetBytes(ImageCipher.KeyLength(options.Encryption));
        }
    }

    public int Pid => _options.Pid;

    /// <summary>
    /// A random image id. It names an image and guards nothing (keys and salts come from the
    /// cryptographic generator), so it comes from .NET's generator seeded by the system: the
    /// cryptographic one loads the crypto library, megabytes of memcr's RSS for a plain checkpoint.
    /// </summary>
    private static ulong NewImageId()
    {
        Span<byte> id = stackalloc byte[8];
        Random.Shared.NextBytes(id);
        return BitConverter.ToUInt64(id);
    }

    /// <summary>The random id of this checkpoint's image (its header's image id).</summary>
    public ulong ImageId => _imageId;

    public string ImagePath => _options.ImagePath;

    public RssStats Before { get; private set; }

    public RssStats After { get; private set; }

    public long ImageBytes { get; private set; }

    public ulong SavedBytes { get; private set; }

    /// <summary>Bytes the page records take in the image (after compression).</summary>
    public ulong StoredBytes { get; private set; }

    /// <summary>
    /// Freezes the target, saves its memory and drops it. On failure the target is left running as
    /// it was (or, if memory had been dropped already, given it back first) and the error rethrown.
    /// </summary>
    public static CheckpointSession Checkpoint(CheckpointOptions options, Log log, CancellationToken cancel = default)
    {
        TargetValidator.Validate(options.Pid);
        TargetValidator.ValidateDumpDir(options.DumpDir);
        if (options.Incremental)
        {
            if (IncrementalUnavailable() is { } why)
                throw new CheckpointException($"--incremental: {why}; nothing was done");
            if (options.Encryption != Encryption.None && options.Key is null)
                throw new CheckpointException("--incremental with -e needs --key-file: a random key dies with this memcr, and the next checkpoint could not read the image it keeps; nothing was done");
        }
        log.Step($"seizing target pid {options.Pid}");
        Tracer tracer;
        try
        {
            tracer = Tracer.Seize(options.Pid, log.Debug);
        }
        catch (ProcessGoneException e)
        {
            throw new CheckpointException(e.Message, e);
        }
        catch (SyscallException e)
        {
            throw new CheckpointException($"cannot freeze pid {options.Pid}: {e.Message}", e);
        }
        int threads = tracer.Threads.Count(t => t.State != TraceState.Gone);
        log.Info($"{threads} {(threads == 1 ? "thread" : "threads")}");
        var session = new CheckpointSession(options, log, tracer);
        try
        {
            session.Run(cancel);
            return session;
        }
        catch (Exception e)
        {
            session.Abort(e);
            if (e is CheckpointException or OperationCanceledException)
                throw;
            throw new CheckpointException($"checkpoint of pid {options.Pid} failed: {e.Message}; {session.Outcome()}", e);
        }
    }

    /// <summary>
    /// Takes over a process that another memcr checkpointed and left in a group stop when it died
    /// (found through the service journal): seizes it, keeps it stopped, and makes
    /// <see cref="Restore"/> write its memory back from the image <paramref name="imageId"/> and let it run.
    /// </summary>
    public static CheckpointSession Adopt(CheckpointOptions options, ulong imageId, Log log)
    {
        var status = TargetValidator.Validate(options.Pid);
        if (status.State != 'T')
            throw new CheckpointException($"pid {options.Pid} is not stopped (state {status.State}): it is not a checkpointed process waiting for its memory");
        Tracer tracer;
        try
        {
            tracer = Tracer.Seize(options.Pid, log.Debug);
        }
        catch (Exception e) when (e is ProcessGoneException or SyscallException)
        {
            throw new CheckpointException($"cannot take over pid {options.Pid}: {e.Message}", e);
        }
        tracer.TakeOverGroupStop();
        return new CheckpointSession(options, log, tracer, imageId)
        {
            _dropped = true,
            _imageExists = true,
            ImageBytes = File.Exists(options.ImagePath) ? new FileInfo(options.ImagePath).Length : 0,
        };
    }

    private string Outcome() => _tracer.IsAlive ? "the target was left running untouched" : "the target has gone";

    private void Run(CancellationToken cancel)
    {
        using var previous = TakeStock(out int trackingFd);
        Run(previous, trackingFd, cancel);
    }

    private void Run(ImageChain? previous, int trackingFd, CancellationToken cancel)
    {
        var selected = VmaSelector.Select(Pid, _options.IncludeFileMappings, (vma, reason) =>
        {
            if (reason.StartsWith("file mapping", StringComparison.Ordinal))
                _log.Debug($"skipping {vma.Describe()}: {reason}");
            else
                _log.Info($"skipping {reason} VMA {vma.Start:x16}..{vma.End:x16} {vma.Path}");
        }, previous is null ? null : WriteTracking.Covers(previous.Newest.Vmas));
        bool many = selected.Count >= ManyVmas;
        Before = RssStats.Read(Pid);
        ulong vss = selected.Aggregate(0UL, (sum, v) => sum + v.Length);
        _log.Info($"{selected.Count} candidate VMAs, VSS {vss / 1024} kB, RSS {Before.VmRss} kB");

        _log.Step("downloading pages");
        _startedDownload = _lap = Stopwatch.GetTimestamp();
        var dump = new ImageDump(_options, _log, _memory, _imageId, _key);
        var plan = previous is not null ? PlanOver(dump, selected, previous, trackingFd) : dump.Plan(selected);
        (_dropSpans, _dropVmas) = (plan.DropSpans, plan.Vmas.Count);
        Lap("page scan");
        if (many)
        {
            // Reading smaps and planning made garbage in proportion to the VMAs: gone before the buffers come.
            MemoryTrim.CollectGarbage();
            Lap("garbage collection");
        }
        cancel.ThrowIfCancellationRequested();
        if (dump.Parent is not null)
            Demote(previous!);
        try
        {
            dump.Write(plan, cancel);
        }
        finally
        {
            _imageExists |= dump.ImageCreated;
        }
        (ImageBytes, SavedBytes, StoredBytes) = (dump.ImageBytes, dump.SavedBytes, dump.StoredBytes);
        Lap("read and write");
        cancel.ThrowIfCancellationRequested();
        dump.VerifyWritten(plan);
        Lap("image check");
        cancel.ThrowIfCancellationRequested(); // the last moment the target can be left as it was

        _options.BeforeDrop?.Invoke(this);
        // From here the target depends on the image. Hold it in a group stop first so that, should
        // memcr die, the target stays stopped rather than running on dropped memory.
        _tracer.HoldInGroupStop();
        Lap("group stop");
        Drop();
        Lap("drop");
        if (!_options.KeepImageCached)
        {
            using var file = File.OpenHandle(ImagePath, FileMode.Open, FileAccess.Read);
            FileOps.SyncAndEvict(file, ImagePath);
            Lap("writeback and eviction");
        }
        _log.Info($"image {ImageBytes / 1024} kB: {SavedBytes / 1024} kB of pages in {plan.Records.Count} records"
            + (_options.Codec == Codec.None ? "" : $", {_options.Codec} {StoredBytes / 1024} kB stored (ratio {(double)SavedBytes / Math.Max(1, StoredBytes):F2})"));
        _log.Info($"download took {(long)Stopwatch.GetElapsedTime(_startedDownload).TotalMilliseconds} ms");
        _log.Info($"stored at {ImagePath}");
        After = RssStats.Read(Pid);
        RssStats.Show(_log, Before, After);
        // Likewise what the checkpoint left behind, before a restore (memcr -n: at once) reads its maps and image.
        if (many)
            MemoryTrim.CollectGarbage();
    }

    /// <summary>From this many VMAs on, the garbage of planning is collected before the pages are read.</summary>
    private const int ManyVmas = 1000;

    private long _startedDownload;
    private long _lap;

    private void Lap(string what)
    {
        long now = Stopwatch.GetTimestamp();
        _log.Debug($"{what}: {Stopwatch.GetElapsedTime(_lap, now).TotalMilliseconds:F1} ms");
        _lap = now;
    }

    /// <summary>
    /// madvise(MADV_DONTNEED) of every VMA that had pages, executed by a target thread: one call
    /// for each run of adjacent VMAs (a remote call costs tens of microseconds; a program can have
    /// tens of thousands of VMAs).
    /// </summary>
    private void Drop()
    {
        if (_dropSpans.Count == 0)
            return;
        int calls = MemoryDrop.Run(_tracer, _arch, SyscallInstruction(), _dropSpans, () => _dropped = true);
        _log.Debug($"dropped {_dropVmas} VMAs with {calls} madvise calls");
    }

    /// <summary>
    /// Checks on a frozen target: throws <see cref="TargetTerminatedException"/> if it has died, or
    /// lets it die if a signal that terminates it is pending (kill PID must work on a parked app).
    /// </summary>
    public void Poll()
    {
        if (_over)
            return;
        if (_tracer.ReapAll() is { } exit)
            Terminated(exit);
        ProcStatus status;
        try
        {
            status = ProcFs.ReadStatus(Pid);
        }
        catch (ProcessGoneException)
        {
            Terminated(_tracer.ReapAll() ?? new WaitStatus(Signals.SIGKILL));
            return;
        }
        ulong pending = (status.ShdPnd | status.SigPnd) & ~status.SigIgn & ~status.SigCgt;
        for (int sig = 1; sig <= Signals.Max; sig++)
        {
            // SIGKILL needs no help: the kernel ends a traced process at once.
            if ((pending & Signals.Bit(sig)) == 0 || !Signals.TerminatesByDefault(sig) || sig == Signals.SIGKILL)
                continue;
            int? tid = ThreadNotBlocking(sig);
            if (tid is null)
                continue;
            _log.Info($"{Signals.Name(sig)} is pending for pid {Pid} and terminates it: letting it die");
            try
            {
                _tracer.DieOfPendingSignal(tid.Value, sig);
            }
            catch (SyscallException e) when (e.Errno == Errno.ESRCH)
            {
                // Killed meanwhile by something else.
            }
            Terminated(_tracer.ReapAll() ?? new WaitStatus(sig));
        }
    }

    private int? ThreadNotBlocking(int sig)
    {
        foreach (var t in _tracer.Threads.Where(t => t.State != TraceState.Gone))
        {
            try
            {
                if ((ProcFs.ReadTaskStatus(Pid, t.Tid).SigBlk & Signals.Bit(sig)) == 0)
                    return t.Tid;
            }
            catch (ProcessGoneException)
            {
            }
        }
        return null;
    }

    private void Terminated(WaitStatus exit)
    {
        _over = true;
        DeleteImage();
        ForgetChain();
        string how = exit.Signaled ? $"terminated by {Signals.Name(exit.TermSignal)}" : $"exited with status {exit.ExitCode}";
        throw new TargetTerminatedException(Pid, how);
    }

    /// <summary>
    /// Writes every page back from the image (after checking all of it) and lets the target run.
    /// If the image cannot be used, the target is killed (it must never run on dropped memory) and
    /// the image removed. If a signal that terminates the target is pending, the target dies of it
    /// and <see cref="TargetTerminatedException"/> is thrown, as <see cref="Poll"/> does.
    /// </summary>
    public TimeSpan Restore()
    {
        if (_over)
            throw new InvalidOperationException($"pid {Pid} is not checkpointed");
        // A signal that ends the process may have come just before the restore, between two polls:
        // it ends the process now, as it would have a moment later, whatever the timing.
        Poll();
        _log.Step("uploading pages");
        var started = Stopwatch.GetTimestamp();
        bool tracking;
        try
        {
            var vmas = WriteBack();
            // Before the target runs: none of its writes may go unseen.
            tracking = _options.Incremental && ArmTracking(vmas);
        }
        catch (Exception e) when (e is ImageFormatException or IOException or CheckpointException or UnauthorizedAccessException)
        {
            _over = true;
            _tracer.Kill();
            DeleteImage();
            ForgetChain();
            string why = e is ImageFormatException f ? f.Message : e.Message;
            throw new CheckpointException($"cannot restore pid {Pid}: {why}; pid {Pid} was killed with SIGKILL because its memory cannot be given back", e);
        }
        _log.Step("unseizing target");
        _tracer.Detach();
        _over = true;
        Lap("target released");
        // The target runs from here: removing the image (which can take a while for a large one) is not part of the restore.
        var took = Stopwatch.GetElapsedTime(started);
        _log.Info($"upload took {(long)took.TotalMilliseconds} ms");
        if (tracking)
        {
            _imageExists = false; // kept for the next checkpoint
            _log.Info($"image kept at {ImagePath}: the next incremental checkpoint of pid {Pid} saves only what it writes from now");
            return took;
        }
        DeleteImage();
        ForgetChain();
        Lap("image removed");
        return took;
    }

    /// <summary>
    /// Writes the pages back from the image (and, for an incremental image, from the older images
    /// of its chain: from each what the newer ones kept). Every image of the chain is opened and
    /// checked (header, key, index, digest, links) before the first page is written. Returns the
    /// VMA table of the newest image.
    /// </summary>
    private IReadOnlyList<ImageVma> WriteBack()
    {
        _lap = Stopwatch.GetTimestamp();
        using var chain = ImageChain.Open(ImagePath, _imageId, Pid, _key);
        Lap("image check");
        if (!_dropped)
            return chain.Newest.Vmas; // nothing was dropped: the target's memory is intact
        var restorer = new EagerPageRestorer(_memory, _options.Parallelism, _options.Budget ?? new MemoryBudget(), _options.KeepImageCached, _options.Checksum, _log);
        var wanted = chain.Wanted();
        for (int i = 0; i < chain.Images.Count; i++)
            restorer.Restore(chain.Images[i], wanted[i]);
        Lap(chain.Images.Count == 1 ? "pages written back" : $"pages written back from {chain.Images.Count} images");
        return chain.Newest.Vmas;
    }

    /// <summary>
    /// Opens the image and checks all that can be proven without reading the pages (header, key,
    /// index, digest), before anything is written; each record is checked as it is read, before
    /// its pages are written. Reading the image twice to check it all first would only double the
    /// time: a damaged record found half-way kills the target, as a damaged image found first would.
    /// </summary>
    private ImageReader OpenImage() => OpenImage(ImagePath, _imageId, Pid, _key);

    internal static ImageReader OpenImage(string path, ulong imageId, int pid, byte[]? key)
    {
        var image = ImageReader.Open(path, key: key);
        try
        {
            if (image.Header.ImageId != imageId)
                throw new ImageFormatException(path, 40, "this is not the image this checkpoint wrote (it was replaced)");
            if (image.Header.Pid != pid)
                throw new ImageFormatException(path, 24, $"image is of pid {image.Header.Pid}, not {pid}");
            if (image.Header.Encryption != Encryption.None && key is null)
                throw new ImageFormatException(path, 23, "the image is encrypted and there is no key for it: a random key lives only in the memcr that made the image (a persistent one comes from --key-file)");
            if (image.Header.PageSize != Environment.SystemPageSize)
                throw new ImageFormatException(path, 16, $"image page size {image.Header.PageSize} differs from this system's {Environment.SystemPageSize}");
            return image;
        }
        catch
        {
            image.Dispose();
            throw;
        }
    }

    /// <summary>Undoes a checkpoint that failed part-way.</summary>
    private void Abort(Exception cause)
    {
        _over = true;
        try
        {
            if (_dropped && _tracer.IsAlive)
            {
                _log.Error($"checkpoint failed after memory was dropped ({cause.Message}); writing it back");
                WriteBack();
            }
            _tracer.Detach();
        }
        catch (Exception e)
        {
            _log.Error($"cannot give pid {Pid} its memory back: {e.Message}; killing it with SIGKILL");
            _tracer.Kill();
        }
        DeleteImage();
        // The tracking goes on (the pages written back count as written): the older image is the newest again.
        Promote();
    }

    private void DeleteImage()
    {
        if (!_imageExists)
            return;
        Lazy.LazyLedger.Delete(ImagePath);
        try
        {
            File.Delete(ImagePath);
        }
        catch (IOException e)
        {
            _log.Error($"cannot remove {ImagePath}: {e.Message}");
        }
        _imageExists = false;
    }

    public void Dispose()
    {
        if (!_over)
            Restore();
        _memory.Dispose();
    }
}
