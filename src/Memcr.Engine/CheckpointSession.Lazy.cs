using System.Diagnostics;
using Memcr.Engine.Lazy;
using Memcr.Image;
using Memcr.Linux;
using Memcr.Linux.Arch;
using Memcr.Linux.Memory;
using Memcr.Linux.Proc;
using Memcr.Linux.Ptrace;

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
        ImageReader? image = null;
        LazyRestore? lazy = null;
        try
        {
            image = OpenImage();
            if (image.Header.Incremental)
                throw new LazyRestoreUnavailableException($"the image of pid {Pid} is incremental: its pages come from {image.Header.ChainDepth + 1} images, which are restored eagerly");
            if (!_dropped)
            {
                image.Dispose();
                _tracer.Detach();
                _over = true;
                DeleteImage();
                return null;
            }
            lazy = PrepareLazy(image);
            resuming?.Invoke(_lazyFd);
            lazy.Start();
        }
        catch (LazyRestoreUnavailableException)
        {
            image?.Dispose();
            throw;
        }
        catch (Exception e) when (e is ImageFormatException or IOException or CheckpointException or UnauthorizedAccessException)
        {
            lazy?.Dispose();
            image?.Dispose();
            _over = true;
            _tracer.Kill();
            DeleteImage();
            throw new CheckpointException($"cannot restore pid {Pid}: {e.Message}; pid {Pid} was killed with SIGKILL because its memory cannot be given back", e);
        }
        _tracer.Detach();
        _over = true;
        _imageExists = false; // the lazy session removes it
        _log.Info($"resumed in {Stopwatch.GetElapsedTime(started).TotalMilliseconds:F1} ms; {lazy.TotalBytes >> 20} MiB to come back");
        return new LazySession(Pid, _lazyFd, ImagePath, image, lazy, _log);
    }

    private int _lazyFd = -1;

    /// <summary>
    /// With the target held: writes what cannot be served lazily, makes a userfaultfd in the
    /// target and takes it, and registers the ranges to serve.
    /// </summary>
    private LazyRestore PrepareLazy(ImageReader image)
    {
        var vmas = ProcFs.ReadMaps(Pid);
        var lazy = new bool[image.Index.Count];
        for (int i = 0; i < image.Index.Count; i++)
        {
            var e = image.Index[i];
            lazy[i] = Under(vmas, e.Address, e.End).All(v => !v.IsFile && !v.Shared && v.IsWritable);
        }
        // Before anything is registered: a write through /proc/PID/mem into a registered missing
        // page would wait for this very thread to answer it.
        WriteEagerly(image, lazy);
        Lap("eager part written");
        var fd = MakeUserFaultFd();
        try
        {
            fd.Enable(LazyRestore.Features);
            foreach (var (start, end) in Ranges(vmas, image, lazy))
                fd.RegisterMissing(start, end);
        }
        catch (SyscallException e)
        {
            // Closing both copies releases the userfaultfd, and with it what was registered.
            fd.Dispose();
            LazySession.CloseInTarget(_tracer, _lazyFd, _log);
            throw new LazyRestoreUnavailableException($"pid {Pid} cannot be restored lazily: {e.Message}", e);
        }
        var pending = new PendingPages(Enumerable.Range(0, lazy.Length).Where(i => lazy[i])
            .Select(i => PendingExtent.Whole(image, i)));
        LazyLedger ledger;
        try
        {
            ledger = LazyLedger.Create(ImagePath, lazy, _log.Error);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            fd.Dispose();
            LazySession.CloseInTarget(_tracer, _lazyFd, _log);
            throw new LazyRestoreUnavailableException($"pid {Pid} cannot be restored lazily: cannot write {LazyLedger.PathFor(ImagePath)}: {e.Message}", e);
        }
        return new LazyRestore(Pid, image, fd, pending, ledger, _options, _log);
    }

    /// <summary>A syscall instruction in the target's code or vDSO, for remote calls.</summary>
    private ulong SyscallInstruction() => SyscallInstruction(Pid, _arch, _memory);

    internal static ulong SyscallInstruction(int pid, CpuArchitecture arch, RemoteMemory memory) =>
        RemoteSyscall.FindSyscallInstruction(pid, ProcFs.ReadMaps(pid, RemoteSyscall.MayHoldSyscallInstruction), arch, memory);

    /// <summary>userfaultfd() run by the target (so that it serves the target's memory), then taken with pidfd_getfd.</summary>
    private UserFaultFd MakeUserFaultFd()
    {
        try
        {
            var (fd, targetFd) = UserFaultFdInTarget(UserFaultFd.CreateFlags);
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

    /// <summary>The VMAs under [start, end), in order.</summary>
    private static IEnumerable<Vma> Under(List<Vma> vmas, ulong start, ulong end)
    {
        for (int j = FirstEndingAfter(vmas, start); j < vmas.Count && vmas[j].Start < end; j++)
            yield return vmas[j];
    }

    /// <summary>The VMAs under lazily served records (in whatever order the image holds them), adjacent ones merged: what is registered.</summary>
    private static List<(ulong Start, ulong End)> Ranges(List<Vma> vmas, ImageReader image, bool[] lazy)
    {
        var under = new bool[vmas.Count];
        for (int i = 0; i < lazy.Length; i++)
        {
            if (!lazy[i])
                continue;
            var e = image.Index[i];
            for (int j = FirstEndingAfter(vmas, e.Address); j < vmas.Count && vmas[j].Start < e.End; j++)
                under[j] = true;
        }
        return VmaSelector.AdjacentSpans(vmas.Where((_, j) => under[j]).Select(v => (v.Start, v.End))).ToList();
    }

    /// <summary>The index of the first VMA (in address order) that ends after <paramref name="address"/>.</summary>
    private static int FirstEndingAfter(List<Vma> vmas, ulong address) => VmaSelector.FirstEndingAfter(vmas, address, v => v.End);

    /// <summary>Writes the records that are not served lazily, through /proc/PID/mem (which forces through page protections).</summary>
    private void WriteEagerly(ImageReader image, bool[] lazy)
    {
        using var source = new RecordSource(image, _options.KeepImageCached);
        for (int i = 0; i < lazy.Length; i++)
        {
            if (lazy[i])
                continue;
            source.Load(image.RecordBatch(i));
            _memory.WriteMem(new Transfer(image.Index[i].Address, source.Pages(i), image.Index[i].Length));
        }
    }
}
