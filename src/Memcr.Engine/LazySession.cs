using Memcr.Engine.Lazy;
using Memcr.Image;
using Memcr.Linux;
using Memcr.Linux.Arch;
using Memcr.Linux.Kernel;
using Memcr.Linux.Memory;
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
    private readonly ImageReader _image;
    private readonly string _imagePath;
    private readonly Log _log;
    private bool _finished;

    internal LazySession(int pid, int targetFd, string imagePath, ImageReader image, LazyRestore lazy, Log log)
    {
        Pid = pid;
        TargetFd = targetFd;
        _imagePath = imagePath;
        _image = image;
        _lazy = lazy;
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
    /// userfaultfd from the process (its fd <paramref name="targetFd"/>), works out from the image
    /// and its ledger what is still owed, and serves it. The process is let run if the memcr that
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
        ImageReader image;
        try
        {
            image = CheckpointSession.OpenImage(options.ImagePath, imageId, pid, options.Key);
        }
        catch (Exception e) when (e is ImageFormatException or IOException or UnauthorizedAccessException)
        {
            throw new CheckpointException($"cannot take over the lazy restore of pid {pid}: {e.Message}", e);
        }
        try
        {
            var pending = LazyLedger.Replay(options.ImagePath, image);
            if (pending is null)
            {
                log.Error($"no ledger {LazyLedger.PathFor(options.ImagePath)}: every page of the image not yet back is given back, also where pid {pid} discarded it meanwhile");
                var registered = LazyRestore.Registered(pid);
                pending = new PendingPages(Enumerable.Range(0, image.Index.Count)
                    .Where(i => registered.Any(r => r.Start < image.Index[i].End && image.Index[i].Address < r.End))
                    .Select(i => PendingExtent.Whole(image, i)));
            }
            UserFaultFd fd;
            using (var pidfd = ProcessCalls.PidfdOpen(pid))
                fd = new UserFaultFd(ProcessCalls.TakeFd(pidfd, pid, targetFd), $"pid {pid}");
            LetRun(pid, log);
            var lazy = new LazyRestore(pid, image, fd, pending, LazyLedger.Reopen(options.ImagePath, log.Error), options, log);
            lazy.Start();
            // Faults the memcr that died had read but not answered: raised again, to this one.
            lazy.WakeAll();
            log.Info($"lazy restore taken over: {pending.Bytes >> 20} MiB at most still owed");
            return new LazySession(pid, targetFd, options.ImagePath, image, lazy, log);
        }
        catch (Exception e) when (e is ImageFormatException or IOException or SyscallException or ProcessGoneException)
        {
            image.Dispose();
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
    /// serving and removes the image and its ledger. If the serving failed (a damaged record) while
    /// the process lives, the process is killed: pages it has not got would read as zeros.
    /// </summary>
    public void Finish()
    {
        if (_finished)
            return;
        _finished = true;
        try
        {
            if (_lazy.Failure is { } why && _lazy.TargetAlive)
            {
                Signals.Kill(Pid);
                _log.Error($"cannot restore pid {Pid}: {why.Message}; pid {Pid} was killed with SIGKILL because its memory cannot be given back");
            }
            else if (_lazy.TargetAlive)
            {
                _lazy.Unregister();
                CloseInTarget(Pid, TargetFd, _log);
            }
        }
        finally
        {
            _lazy.Dispose();
            _image.Dispose();
            DeleteFiles(_imagePath, _log);
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

    /// <summary>Closes fd <paramref name="fd"/> of the running process: seize, one remote close(), detach.</summary>
    internal static void CloseInTarget(int pid, int fd, Log log)
    {
        Tracer tracer;
        try
        {
            tracer = Tracer.Seize(pid, log.Debug);
        }
        catch (ProcessGoneException)
        {
            return;
        }
        using (tracer)
            CloseInTarget(tracer, fd, log);
    }

    /// <summary>One remote close() of <paramref name="fd"/> by a thread of the seized process.</summary>
    internal static void CloseInTarget(Tracer tracer, int fd, Log log)
    {
        var arch = CpuArchitecture.Current;
        ulong instruction;
        using (var memory = new RemoteMemory(tracer.Pid))
            instruction = CheckpointSession.SyscallInstruction(tracer.Pid, arch, memory);
        using var remote = RemoteSyscall.Open(tracer, arch, instruction);
        long r = remote.Call(arch.Syscalls.Close, (ulong)fd);
        if (r < 0)
            log.Error($"close of fd {fd} (its userfaultfd) in pid {tracer.Pid}: {SyscallException.Describe((int)-r)}");
    }

    public void Dispose() => Finish();
}
