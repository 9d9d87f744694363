using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Memcr.Linux.Memory;

/// <summary>
/// Finds the resident and swapped pages of a range of another process's address space. Uses the
/// PAGEMAP_SCAN ioctl (Linux 6.7+), which answers with page ranges in one call, and falls back to
/// reading /proc/PID/pagemap 8 bytes a page on older kernels.
/// </summary>
public sealed class PagemapScanner : IDisposable
{
    // _IOWR('f', 16, struct pm_scan_arg) with sizeof(pm_scan_arg) == 96 (include/uapi/linux/fs.h).
    private const nuint PAGEMAP_SCAN = 0xC0606610;
    private const ulong PAGE_IS_WPALLOWED = 1 << 0;
    private const ulong PAGE_IS_WRITTEN = 1 << 1;
    private const ulong PAGE_IS_FILE = 1 << 2;
    private const ulong PAGE_IS_PRESENT = 1 << 3;
    private const ulong PAGE_IS_SWAPPED = 1 << 4;
    private const ulong PAGE_IS_PFNZERO = 1 << 5;

    private const ulong PM_PRESENT = 1UL << 63;
    private const ulong PM_SWAPPED = 1UL << 62;
    private const ulong PM_FILE = 1UL << 61;
    private const ulong PM_MMAP_EXCLUSIVE = 1UL << 56;

    // Both buffers stay under the large-object threshold and are made once per scanner: a fresh
    // large array per VMA made the GC run full collections in the middle of a dump.
    private const int RegionBatch = 2048;
    private const int EntryBatch = 8192;

    private readonly SafeFileHandle _fd;
    private readonly string _path;
    private readonly ulong _pageSize;
    private bool _useScan;
    private PageRegion[]? _regions;
    private ulong[]? _entries;

    [StructLayout(LayoutKind.Sequential)]
    private struct PmScanArg
    {
        public ulong Size;
        public ulong Flags;
        public ulong Start;
        public ulong End;
        public ulong WalkEnd;
        public ulong Vec;
        public ulong VecLen;
        public ulong MaxPages;
        public ulong CategoryInverted;
        public ulong CategoryMask;
        public ulong CategoryAnyofMask;
        public ulong ReturnMask;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct PageRegion
    {
        public ulong Start;
        public ulong End;
        public ulong Categories;
    }

    public PagemapScanner(int pid, bool allowScanIoctl = true)
    {
        _path = $"/proc/{pid}/pagemap";
        _pageSize = (ulong)Environment.SystemPageSize;
        int fd = Interop.Libc.open(_path, Interop.Libc.O_RDONLY | Interop.Libc.O_CLOEXEC, 0);
        if (fd < 0)
            throw Errno.Error("open", _path);
        _fd = new SafeFileHandle(fd, ownsHandle: true);
        _useScan = allowScanIoctl;
    }

    /// <summary>True once a scan has been answered by PAGEMAP_SCAN rather than the fallback.</summary>
    public bool UsesScanIoctl => _useScan;

    /// <summary>
    /// Runs of pages in [start, end) that are present or swapped, leaving out the shared zero page.
    /// Adjacent pages with the same state are merged.
    /// </summary>
    public List<PageRun> Scan(ulong start, ulong end)
    {
        if (ScanSparse(start, end) is { } scanned)
            return scanned;
        var runs = new List<PageRun>();
        ScanPagemap(start, end, runs);
        return runs;
    }

    /// <summary>
    /// Like <see cref="Scan"/>, but only with PAGEMAP_SCAN, which skips the holes between mappings:
    /// fit for a range spanning a whole address space. Null on a kernel without it (reading
    /// /proc/PID/pagemap over such a range would take 8 bytes for every page of the holes).
    /// </summary>
    public List<PageRun>? ScanSparse(ulong start, ulong end) => ScanIoctl(start, end, writes: false);

    /// <summary>
    /// Like <see cref="ScanSparse"/>, with each run also saying whether its pages were written
    /// since a userfaultfd write-protected them (<see cref="PageState.Written"/>) and whether a
    /// userfaultfd tracks them at all (<see cref="PageState.Tracked"/>). A page under an async
    /// write-protect mapping that was never populated shows as swapped, tracked and not written
    /// (the kernel's marker). Null on a kernel without PAGEMAP_SCAN.
    /// </summary>
    public List<PageRun>? ScanWrites(ulong start, ulong end) => ScanIoctl(start, end, writes: true);

    private List<PageRun>? ScanIoctl(ulong start, ulong end, bool writes)
    {
        if (!_useScan)
            return null;
        var runs = new List<PageRun>();
        if (TryScanIoctl(start, end, runs, writes))
            return runs;
        _useScan = false;
        return null;
    }

    private unsafe bool TryScanIoctl(ulong start, ulong end, List<PageRun> runs, bool writes)
    {
        var regions = _regions ??= new PageRegion[RegionBatch];
        fixed (PageRegion* vec = regions)
        {
            ulong cursor = start;
            while (cursor < end)
            {
                var arg = new PmScanArg
                {
                    Size = (ulong)sizeof(PmScanArg),
                    Start = cursor,
                    End = end,
                    Vec = (ulong)vec,
                    VecLen = RegionBatch,
                    CategoryInverted = PAGE_IS_PFNZERO,
                    CategoryMask = PAGE_IS_PFNZERO,
                    CategoryAnyofMask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
                    ReturnMask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED | PAGE_IS_FILE | (writes ? PAGE_IS_WRITTEN | PAGE_IS_WPALLOWED : 0),
                };
                int n = Interop.Libc.ioctl((int)_fd.DangerousGetHandle(), PAGEMAP_SCAN, &arg);
                if (n < 0)
                {
                    int errno = Errno.Last;
                    // ENOTTY/EINVAL: a kernel without PAGEMAP_SCAN (before 6.7).
                    if (errno is Errno.ENOTTY or Errno.EINVAL or Errno.EOPNOTSUPP && runs.Count == 0 && cursor == start)
                        return false;
                    throw new SyscallException("ioctl(PAGEMAP_SCAN)", $"{_path} [{cursor:x}-{end:x})", errno);
                }
                for (int i = 0; i < n; i++)
                    Append(runs, vec[i].Start, vec[i].End, ToState(vec[i].Categories));
                // When the vector fills exactly, walk_end can come back below the end of the last
                // region returned (seen on 6.18): resume after whichever is further.
                ulong next = arg.WalkEnd;
                if (n > 0 && vec[n - 1].End > next)
                    next = vec[n - 1].End;
                if (next <= cursor)
                    break;
                cursor = next;
            }
        }
        return true;
    }

    private static PageState ToState(ulong categories)
    {
        var state = PageState.None;
        if ((categories & PAGE_IS_PRESENT) != 0) state |= PageState.Present;
        if ((categories & PAGE_IS_SWAPPED) != 0) state |= PageState.Swapped;
        if ((categories & PAGE_IS_FILE) != 0) state |= PageState.File;
        if ((categories & PAGE_IS_WRITTEN) != 0) state |= PageState.Written;
        if ((categories & PAGE_IS_WPALLOWED) != 0) state |= PageState.Tracked;
        return state;
    }

    /// <summary>
    /// Runs of resident pages in [start, end) that another mapping holds too: copy-on-write pages
    /// shared with a parent or child since fork. Read from /proc/PID/pagemap (PM_MMAP_EXCLUSIVE),
    /// which PAGEMAP_SCAN does not report.
    /// </summary>
    public List<PageRun> SharedRuns(ulong start, ulong end)
    {
        var runs = new List<PageRun>();
        ReadPagemap(start, end, (addr, e) =>
        {
            if ((e & PM_PRESENT) != 0 && (e & PM_MMAP_EXCLUSIVE) == 0)
                Append(runs, addr, addr + _pageSize, PageState.Present);
        });
        return runs;
    }

    private void ScanPagemap(ulong start, ulong end, List<PageRun> runs) =>
        ReadPagemap(start, end, (addr, e) =>
        {
            if ((e & (PM_PRESENT | PM_SWAPPED)) == 0)
                return;
            var state = PageState.None;
            if ((e & PM_PRESENT) != 0) state |= PageState.Present;
            if ((e & PM_SWAPPED) != 0) state |= PageState.Swapped;
            if ((e & PM_FILE) != 0) state |= PageState.File;
            Append(runs, addr, addr + _pageSize, state);
        });

    private unsafe void ReadPagemap(ulong start, ulong end, Action<ulong, ulong> entry)
    {
        const int Batch = EntryBatch;
        var entries = _entries ??= new ulong[Batch];
        ulong page = start;
        fixed (ulong* buf = entries)
        {
            while (page < end)
            {
                ulong pages = Math.Min((end - page) / _pageSize, Batch);
                long offset = (long)(page / _pageSize * 8);
                nint got = Interop.Libc.pread((int)_fd.DangerousGetHandle(), buf, (nuint)(pages * 8), offset);
                if (got < 0)
                    throw Errno.Error("pread", $"{_path} at 0x{page:x}");
                if (got == 0)
                    break;
                ulong count = (ulong)got / 8;
                for (ulong i = 0; i < count; i++)
                    entry(page + i * _pageSize, buf[i]);
                page += count * _pageSize;
            }
        }
    }

    private static void Append(List<PageRun> runs, ulong start, ulong end, PageState state)
    {
        if (runs.Count > 0)
        {
            var last = runs[^1];
            if (last.End == start && last.State == state)
            {
                runs[^1] = last with { End = end };
                return;
            }
        }
        runs.Add(new PageRun(start, end, state));
    }

    public void Dispose() => _fd.Dispose();
}
