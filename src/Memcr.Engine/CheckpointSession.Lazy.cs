using System.Diagnostics;
using Memcr.Engine.Incremental;
using Memcr.Engine.Lazy;
using Memcr.Image;
using Memcr.Linux;
using Memcr.Linux.Memory;
using Memcr.Linux.Proc;

namespace Memcr.Engine;

/// <summary>Thrown when a lazy restore cannot be set up; nothing was changed, and an eager restore can follow.</summary>
public sealed class LazyRestoreUnavailableException(string message, Exception? inner = null) : Exception(message, inner);

public sealed partial class CheckpointSession
{
    /// <summary>
    /// Lets the target run again at once and brings its pages back as it touches them (see
    /// <see cref="LazyRestore"/>); returns the restore being served, or null when nothing had been
    /// dropped (the target simply runs on). Pages under private file mappings and under mappings
    /// that are not writable are written before it runs. <paramref name="resuming"/> is told the
    /// target's copy of the userfaultfd just before the target runs (the service journals it, so
    /// that a memcr that takes over can finish the restore). Throws
    /// <see cref="LazyRestoreUnavailableException"/> with nothing changed when this kernel or this
    /// target cannot be served lazily (then <see cref="Restore"/> does it eagerly); a damaged image
    /// kills the target, as <see cref="Restore"/> does.
    /// </summary>
    public LazySession? RestoreLazily(Action<int>? resuming = null)
    {
        if (_over)
            throw new InvalidOperationException($"pid {Pid} is not checkpointed");
        Poll();
        _log.Step("resuming, pages on demand");
        var started = Stopwatch.GetTimestamp();
        _lap = started;
        if (!_dropped)
        {
            // Nothing to bring back: the process runs on at once (tracked, with --incremental).
            Restore();
            return null;
        }
        ImageChain? chain = null;
        LazyImages? images = null;
        LazyRestore? lazy = null;
        try
        {
            chain = ImageChain.Open(ImagePath, _imageId, Pid, _key);
            Lap(chain.Images.Count == 1 ? "image check" : $"image check ({chain.Images.Count} images)");
            images = new LazyImages(chain);
            lazy = PrepareLazy(images);
            resuming?.Invoke(_lazyFd);
            lazy.Start();
        }
        catch (LazyRestoreUnavailableException)
        {
            chain?.Dispose();
            throw;
        }
        catch (Exception e) when (e is ImageFormatException or IOException or CheckpointException or UnauthorizedAccessException)
        {
            lazy?.Dispose();
            chain?.Dispose();
            _over = true;
            _tracer.Kill();
            DeleteImage();
            ForgetChain();
            throw new CheckpointException($"cannot restore pid {Pid}: {e.Message}; pid {Pid} was killed with SIGKILL because its memory cannot be given back", e);
        }
        _tracer.Detach();
        _over = true;
        _imageExists = false; // the lazy session removes it, or keeps it for the next incremental checkpoint
        _log.Info($"resumed in {Stopwatch.GetElapsedTime(started).TotalMilliseconds:F1} ms; {lazy.TotalBytes >> 20} MiB to come back");
        return new LazySession(Pid, _lazyFd, _options, images, lazy, _options.Incremental, _log);
    }

    private int _lazyFd = -1;

    /// <summary>
    /// With the target held: writes what cannot be served lazily, makes a userfaultfd in the
    /// target and takes it, and registers the ranges to serve. With --incremental the writes are
    /// tracked from the start: served ranges are registered in write-protect mode too, and the rest
    /// of what the image covers in write-protect mode only, write-protected before the target runs.
    /// </summary>
    private LazyRestore PrepareLazy(LazyImages images)
    {
        // What the faults are answered from, made ready while the target is held so that its
        // first faults find it so; the eager part is read through it first.
        var source = new RecordSource(images, _options.KeepImageCached);
        try
        {
            source.Prepare();
            return PrepareLazy(images, source);
        }
        catch
        {
            source.Dispose();
            throw;
        }
    }

    private LazyRestore PrepareLazy(LazyImages images, RecordSource source)
    {
        bool tracking = _options.Incremental;
        if (tracking)
            EndPreviousTracking();
        var plan = new LazyPlan(ProcFs.ReadMaps(Pid), images.Count, images.Parts);
        var lazy = plan.Lazy;
        // Before anything is registered: a write through /proc/PID/mem into a registered missing
        // page would wait for this very thread to answer it.
        WriteEagerly(images, lazy, source);
        Lap("eager part written");
        var fd = MakeUserFaultFd();
        try
        {
            fd.Enable(LazyRestore.Features | (tracking ? UserFaultFd.FeatureWriteProtectAsync : 0));
            var served = plan.Registered;
            foreach (var (start, end) in served)
            {
                if (tracking)
                    fd.RegisterMissingWriteProtect(start, end);
                else
                    fd.RegisterMissing(start, end);
            }
            if (tracking)
            {
                var registered = served.Select(r => new KeptRange(r.Start, r.End)).ToList();
                foreach (var (start, end) in WriteTracking.Spans(images.Newest.Vmas).SelectMany(s => PageRanges.Outside(registered, s.Start, s.End)))
                {
                    fd.RegisterWriteProtect(start, end);
                    fd.WriteProtect(start, end);
                }
            }
        }
        catch (SyscallException e)
        {
            // Closing both copies releases the userfaultfd, and with it what was registered.
            fd.Dispose();
            TargetFds.Close(_tracer, _lazyFd, _log);
            throw new LazyRestoreUnavailableException($"pid {Pid} cannot be restored lazily: {e.Message}", e);
        }
        var pending = new PendingPages(images.Owed(lazy));
        LazyLedger ledger;
        try
        {
            ledger = LazyLedger.Create(ImagePath, lazy, _log.Error);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            fd.Dispose();
            TargetFds.Close(_tracer, _lazyFd, _log);
            throw new LazyRestoreUnavailableException($"pid {Pid} cannot be restored lazily: cannot write {LazyLedger.PathFor(ImagePath)}: {e.Message}", e);
        }
        return new LazyRestore(Pid, images, source, fd, pending, ledger, tracking, _options, _log);
    }

    /// <summary>
    /// The tracking of the restore before this checkpoint ends: its userfaultfd holds the ranges
    /// this restore registers (the checkpoint has used what it recorded).
    /// </summary>
    private void EndPreviousTracking()
    {
        TrackState? previous;
        try
        {
            previous = TrackState.Read(_options.DumpDir, Pid);
        }
        catch (Exception e) when (e is InvalidDataException or IOException or UnauthorizedAccessException)
        {
            return;
        }
        if (previous is not null && ProcFds.IsUserFaultFd(Pid, previous.Fd))
            TargetFds.Close(_tracer, previous.Fd, _log);
    }

    /// <summary>A syscall instruction in the target's code or vDSO, for remote calls.</summary>
    private ulong SyscallInstruction() => TargetFds.SyscallInstruction(Pid, _arch, _memory);

    /// <summary>userfaultfd() run by the target (so that it serves the target's memory), then taken with pidfd_getfd.</summary>
    private UserFaultFd MakeUserFaultFd()
    {
        try
        {
            var (fd, targetFd) = TargetFds.MakeUserFaultFd(_tracer, UserFaultFd.CreateFlags, _log);
            if (fd is null)
            {
                throw new LazyRestoreUnavailableException(
                    $"pid {Pid} cannot be restored lazily: userfaultfd() in it: {SyscallException.Describe(Errno.EPERM)} (vm.unprivileged_userfaultfd is 0 and the target lacks CAP_SYS_PTRACE: its kernel-mode faults could not wait)");
            }
            _lazyFd = targetFd;
            return fd;
        }
        catch (SyscallException e)
        {
            throw new LazyRestoreUnavailableException($"pid {Pid} cannot be restored lazily: {e.Message}", e);
        }
    }

    /// <summary>Writes the records that are not served lazily, through /proc/PID/mem (which forces through page protections).</summary>
    private void WriteEagerly(LazyImages images, bool[] lazy, RecordSource source)
    {
        for (int i = 0; i < lazy.Length; i++)
        {
            if (lazy[i] || images.Parts(i).Length == 0)
                continue;
            if (!source.Holds(i))
                source.Load(i);
            var (image, record) = images.At(i);
            ulong address = image.Index[record].Address;
            foreach (var p in images.Parts(i))
                _memory.WriteMem(new Transfer(p.Start, source.Pages(i) + (nint)(p.Start - address), (int)(p.End - p.Start)));
        }
    }
}
