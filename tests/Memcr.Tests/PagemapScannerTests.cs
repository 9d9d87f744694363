using System.Runtime.InteropServices;
using Memcr.Linux.Memory;

namespace Memcr.Tests;

public sealed unsafe partial class PagemapScannerTests
{
    private static readonly int Page = Environment.SystemPageSize;

    [Fact]
    public void ScanIoctlAndPagemapFallback_FindTheSamePages()
    {
        // Touch every third page of a fresh 64-page block; read one more page without writing
        // (it maps the shared zero page, which neither scan reports as worth saving).
        nuint size = (nuint)(64 * Page);
        byte* block = (byte*)NativeMemory.AlignedAlloc(size, (nuint)Page);
        try
        {
            NativeMemory.Clear(block, size);
            ulong start = (ulong)block, end = start + size;
            using var scan = new PagemapScanner(Environment.ProcessId);
            using var fallback = new PagemapScanner(Environment.ProcessId, allowScanIoctl: false);
            var a = scan.Scan(start, end);
            var b = fallback.Scan(start, end);
            Assert.True(scan.UsesScanIoctl, "this kernel answers PAGEMAP_SCAN");
            Assert.Equal(Pages(b), Pages(a));
            Assert.Equal(64, Pages(a).Count);
        }
        finally
        {
            NativeMemory.AlignedFree(block);
        }
    }

    [Fact]
    public void Scan_ReportsOnlyTouchedPagesOfFreshMapping()
    {
        nint map = Mmap(32 * Page);
        try
        {
            byte* p = (byte*)map;
            for (int i = 0; i < 32; i += 3)
                p[i * Page] = 1;
            using var scan = new PagemapScanner(Environment.ProcessId);
            var pages = Pages(scan.Scan((ulong)map, (ulong)map + (ulong)(32 * Page)));
            var expected = Enumerable.Range(0, 32).Where(i => i % 3 == 0).Select(i => (ulong)map + (ulong)(i * Page)).ToList();
            Assert.Equal(expected, pages);
        }
        finally
        {
            Munmap(map, 32 * Page);
        }
    }

    private static List<ulong> Pages(List<PageRun> runs)
    {
        var pages = new List<ulong>();
        foreach (var r in runs)
        {
            Assert.True((r.State & (PageState.Present | PageState.Swapped)) != 0);
            for (ulong a = r.Start; a < r.End; a += (ulong)Page)
                pages.Add(a);
        }
        return pages;
    }

    [LibraryImport("libc", SetLastError = true)]
    private static partial nint mmap(nint addr, nuint length, int prot, int flags, int fd, long offset);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int munmap(nint addr, nuint length);

    private static nint Mmap(int length)
    {
        nint p = mmap(0, (nuint)length, 3, 0x22, -1, 0);
        Assert.NotEqual(-1, p);
        return p;
    }

    private static void Munmap(nint p, int length) => Assert.Equal(0, munmap(p, (nuint)length));
}
