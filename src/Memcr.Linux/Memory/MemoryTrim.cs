using System.Runtime;
using Memcr.Linux.Proc;

namespace Memcr.Linux.Memory;

/// <summary>
/// Gives memory memcr no longer uses back to the kernel: the managed heap collected and
/// decommitted, malloc's free memory trimmed, and the pages of its program and libraries unmapped
/// from it. A service does this once its operations are over, so that between them it holds only
/// what it needs to wait for requests.
/// </summary>
public static class MemoryTrim
{
    public static void Now()
    {
        CollectGarbage();
        GC.WaitForPendingFinalizers();
        _ = Interop.Libc.malloc_trim(0); // 1 if memory was given back, 0 if there was none to give
        UnmapCleanFilePages();
    }

    /// <summary>
    /// Collects the managed heap and gives what it frees back to the kernel at once: between the
    /// phases of an operation that made much garbage (the smaps of a process with tens of
    /// thousands of VMAs), so that the next phase's buffers do not come on top of it.
    /// </summary>
    public static void CollectGarbage()
    {
        GCSettings.LargeObjectHeapCompactionMode = GCLargeObjectHeapCompactionMode.CompactOnce;
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
    }

    /// <summary>
    /// Zaps this process's page table entries for read-only private file mappings that hold no
    /// private (copied-on-write) page: code and constants of memcr and its libraries, most of them
    /// touched once at start or by an operation. The pages stay in the page cache, clean and
    /// reclaimable; those still used are mapped again by a minor fault when next touched. A mapping
    /// with a private page (relocations made read-only afterwards) is left alone: dropping it
    /// would lose what was written.
    /// </summary>
    private static void UnmapCleanFilePages()
    {
        List<(ulong Start, ulong End)> clean = [];
        try
        {
            using var reader = MapsReader.Open("/proc/self/smaps");
            while (reader.Next(out var vma))
            {
                if (vma.IsFile && !vma.IsWritable && !vma.Shared && reader.AnonymousKb == 0)
                    clean.Add((vma.Start, vma.End));
            }
        }
        catch (IOException)
        {
            return;
        }
        foreach (var (start, end) in clean)
            _ = Interop.Libc.madvise((nint)start, (nuint)(end - start), Interop.Libc.MADV_DONTNEED); // best effort: RSS only
    }
}
