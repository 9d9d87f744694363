using Memcr.Image;
using Memcr.Linux;
using Memcr.Linux.Memory;
using Memcr.Linux.Proc;
using Memcr.Linux.Ptrace;

namespace Memcr.Engine.Incremental;

/// <summary>
/// The write tracking of a restored process, so that its next checkpoint saves only what it wrote:
/// a userfaultfd of the process in async write-protect mode (its writes go through at once, only
/// noted in its page table; <see cref="PagemapScanner.ScanWrites"/> reads them) registered over
/// the ranges its image covers. The process keeps the userfaultfd: a memcr that exits does not
/// end the tracking.
/// </summary>
internal static class WriteTracking
{
    /// <summary>
    /// Tracks the writes of the seized process in <paramref name="ranges"/> from now on, through
    /// its userfaultfd <paramref name="previousFd"/> if it still has it (the tracking of an earlier
    /// restore), else through a new one. Pages in <paramref name="written"/> count as written
    /// already: they are left unprotected. Returns the process's descriptor; throws
    /// <see cref="SyscallException"/>, having closed a descriptor it made, when it cannot.
    /// </summary>
    public static int Arm(Tracer tracer, int previousFd, IReadOnlyList<(ulong Start, ulong End)> ranges, IReadOnlyList<KeptRange>? written, Log log)
    {
        int pid = tracer.Pid;
        UserFaultFd fd;
        int targetFd;
        bool made = false;
        if (previousFd >= 0 && ProcFds.IsUserFaultFd(pid, previousFd))
        {
            targetFd = previousFd;
            fd = TargetFds.TakeUserFaultFd(pid, targetFd);
        }
        else
        {
            // A process without CAP_SYS_PTRACE may only have user-mode faults handled: enough
            // here, where no fault waits (the kernel's own writes go through as the process's do).
            var (fresh, freshFd) = TargetFds.MakeUserFaultFd(tracer, UserFaultFd.CreateFlags, log);
            if (fresh is null)
                (fresh, freshFd) = TargetFds.MakeUserFaultFd(tracer, UserFaultFd.CreateFlags | TargetFds.UserModeOnly, log);
            (fd, targetFd) = (fresh ?? throw new SyscallException("userfaultfd() in the target", $"pid {pid}", Errno.EPERM), freshFd);
            made = true;
        }
        try
        {
            using (fd)
            {
                if (made)
                    fd.Enable(UserFaultFd.FeatureWriteProtectAsync);
                foreach (var (start, end) in ranges)
                {
                    fd.RegisterWriteProtect(start, end);
                    foreach (var (from, to) in PageRanges.Outside(written, start, end))
                        fd.WriteProtect(from, to);
                }
            }
            log.Debug($"writes tracked in {ranges.Count} ranges through fd {targetFd} of pid {pid}");
            return targetFd;
        }
        catch (SyscallException)
        {
            if (made && tracer.IsAlive)
                TargetFds.Close(tracer, targetFd, log);
            throw;
        }
    }

    /// <summary>The VMAs of an image's table, adjacent ones merged: the ranges tracked after its restore.</summary>
    public static List<(ulong Start, ulong End)> Spans(IReadOnlyList<ImageVma> vmas) =>
        VmaSelector.AdjacentSpans(vmas.Select(v => (v.Start, v.End))).ToList();

    /// <summary>Whether a VMA lies in the ranges tracked after the restore of an image with the VMA table <paramref name="vmas"/>.</summary>
    public static Func<Vma, bool> Covers(IReadOnlyList<ImageVma> vmas)
    {
        var spans = Spans(vmas);
        return vma => spans.Any(s => s.Start <= vma.Start && vma.End <= s.End);
    }

    /// <summary>
    /// The pages of <paramref name="pid"/> in <paramref name="spans"/> written since they were
    /// write-protected (or never protected), as far as PAGEMAP_SCAN tells; throws
    /// <see cref="SyscallException"/> on a kernel without it.
    /// </summary>
    public static List<KeptRange> Written(int pid, IReadOnlyList<(ulong Start, ulong End)> spans)
    {
        var written = new List<KeptRange>();
        using var scanner = new PagemapScanner(pid);
        foreach (var (start, end) in spans)
        {
            var runs = scanner.ScanWrites(start, end)
                ?? throw new SyscallException("ioctl(PAGEMAP_SCAN)", $"/proc/{pid}/pagemap", Errno.ENOTTY);
            foreach (var run in runs.Where(r => (r.State & PageState.Written) != 0))
                PageRanges.Add(written, run.Start, run.End);
        }
        return written;
    }

    /// <summary>What of <paramref name="spans"/> is mapped in <paramref name="pid"/> now (the process may have unmapped parts since), adjacent VMAs merged.</summary>
    public static List<(ulong Start, ulong End)> Mapped(int pid, IReadOnlyList<(ulong Start, ulong End)> spans)
    {
        var parts = new List<(ulong Start, ulong End)>();
        foreach (var vma in ProcFs.ReadMaps(pid))
        {
            foreach (var (start, end) in spans)
            {
                ulong from = Math.Max(start, vma.Start), to = Math.Min(end, vma.End);
                if (from < to)
                    parts.Add((from, to));
            }
        }
        return VmaSelector.AdjacentSpans(parts).ToList();
    }
}
