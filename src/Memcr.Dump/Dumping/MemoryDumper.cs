using Memcr.CriuImages;
using Memcr.CriuImages.Pages;
using Memcr.Dump.Files;
using Memcr.Linux.Kernel;
using Memcr.Linux.Memory;
using Memcr.Linux.Proc;

namespace Memcr.Dump.Dumping;

/// <summary>A VMA of the process and its entry in mm-PID.img.</summary>
internal sealed record DumpedVma(Vma Source, vma_entry Entry);

/// <summary>
/// mm-PID.img's VMAs, classified as CRIU does (regular, heap, vDSO, vvar, file private or shared,
/// anonymous), and the pages to save: present or swapped pages of private mappings (only the
/// copy-on-write ones of a private file mapping), and the whole vDSO.
/// </summary>
internal static class MemoryDumper
{
    public const uint Regular = 1, Stack = 1 << 1, Vsyscall = 1 << 2, Vdso = 1 << 3, Heap = 1 << 5, FilePrivate = 1 << 6,
        FileShared = 1 << 7, AnonShared = 1 << 8, AnonPrivate = 1 << 9, Vvar = 1 << 12, Memfd = 1 << 14;

    public const uint MapShared = 1, MapPrivate = 2, MapAnonymous = 0x20, MapGrowsdown = 0x100, MapLocked = 0x2000, MapNoreserve = 0x4000, MapHugetlb = 0x40000;

    /// <summary>Largest piece of a run read at once (the page pipeline's buffers are 4 MiB).</summary>
    public const int SegmentBytes = 4 << 20;

    public static List<DumpedVma> Layout(int pid, List<Vma> smaps, FileTable files)
    {
        var vmas = new List<DumpedVma>();
        foreach (var v in smaps)
        {
            // [vvar_vclock] follows [vvar]: CRIU keeps them as one vvar area.
            if (v.Path == "[vvar_vclock]" && vmas.Count > 0 && (vmas[^1].Entry.Status & Vvar) != 0 && vmas[^1].Entry.End == v.Start)
            {
                vmas[^1].Entry.End = v.End;
                continue;
            }
            vmas.Add(new DumpedVma(v, Entry(pid, v, files)));
        }
        return vmas;
    }

    private static vma_entry Entry(int pid, Vma v, FileTable files)
    {
        var e = new vma_entry { Start = v.Start, End = v.End, Pgoff = 0, Shmid = 0, Prot = (uint)v.Protection, Fd = -1 };
        var (flags, madv, unsupported) = VmFlags(v);
        e.Flags = flags | (v.Shared ? MapShared : MapPrivate);
        if (madv != 0)
            e.Madv = madv;
        string where = $"pid {pid} mapping {v.Describe()}";
        switch (v.Path)
        {
            case "[vsyscall]":
                e.Status = Vsyscall | AnonPrivate;
                e.Flags |= MapAnonymous;
                return e;
            case "[vdso]":
                e.Status = Regular | Vdso | AnonPrivate;
                e.Flags |= MapAnonymous;
                return e;
            case "[vvar]" or "[vvar_vclock]":
                e.Status = Regular | AnonPrivate | Vvar;
                e.Flags |= MapAnonymous;
                return e;
            case "[heap]":
                e.Status = Regular | Heap | AnonPrivate;
                e.Flags |= MapAnonymous;
                return e;
        }
        if (unsupported)
            throw new CriuModeException($"{where} is an I/O or PFN mapping of a device, which cannot be dumped; pid {pid} was left running untouched");
        if ((v.IsAnonymous || v.Path.StartsWith('[') || v.Inode == 0) && !v.Shared)
        {
            e.Status = Regular | AnonPrivate;
            e.Flags |= MapAnonymous;
            return e;
        }
        string mapFile = $"/proc/{pid}/map_files/{v.Start:x}-{v.End:x}";
        var st = FileCalls.Stat(mapFile);
        if (v.Path.StartsWith("/SYSV", StringComparison.Ordinal))
            throw new CriuModeException($"{where} is System V shared memory, which is not supported yet; pid {pid} was left running untouched");
        if (v.Path.StartsWith("/memfd:", StringComparison.Ordinal) || v.Path.StartsWith("/dev/zero (deleted)", StringComparison.Ordinal) || (v.Shared && v.IsAnonymous))
        {
            // A memfd, or shared anonymous memory (a shmem file): kept as CRIU 4 keeps both, a
            // memfd inode whose contents are in pagemap-shmem-INODE.img, mapped by every process.
            string name = v.Path.StartsWith("/memfd:", StringComparison.Ordinal) ? v.Path["/memfd:".Length..].Replace(" (deleted)", "", StringComparison.Ordinal) : "dev/zero";
            e.Shmid = files.MemfdMapping(st, name, () => FileCalls.Open(mapFile, 0));
            e.Pgoff = v.Offset;
            e.Status = Regular | Memfd | (v.Shared ? FileShared : FilePrivate);
            e.Fdflags = v.Shared && v.IsWritable ? 2u : 0u;
            return e;
        }
        if (v.Path.EndsWith(" (deleted)", StringComparison.Ordinal))
            throw new CriuModeException($"{where} maps a file that was deleted: deleted files are not supported; pid {pid} was left running untouched");
        if (!st.IsRegular)
            throw new CriuModeException($"{where} maps something that is not a regular file, which cannot be dumped; pid {pid} was left running untouched");
        e.Shmid = files.PathEntry(v.Path, st, () => FdDumper.OpenForReading(mapFile));
        e.Pgoff = v.Offset;
        e.Status = Regular | (v.Shared ? FileShared : FilePrivate);
        e.Fdflags = v.Shared && v.IsWritable ? 2u : 0u; // O_RDWR, O_RDONLY
        return e;
    }

    /// <summary>VmFlags of smaps as mmap flags and madvise bits, as CRIU reads them; and whether the VMA is I/O or PFN-mapped.</summary>
    private static (uint Flags, ulong Madv, bool Unsupported) VmFlags(Vma v)
    {
        uint flags = 0;
        ulong madv = 0;
        bool io = false;
        if (v.VmFlags is null)
            return (0, 0, false);
        foreach (var f in v.VmFlags)
        {
            switch (f)
            {
                case "gd": flags |= MapGrowsdown; break;
                case "lo": flags |= MapLocked; break;
                case "nr": flags |= MapNoreserve; break;
                case "ht": flags |= MapHugetlb; break;
                case "sr": madv |= 1UL << 2; break;  // MADV_SEQUENTIAL
                case "rr": madv |= 1UL << 1; break;  // MADV_RANDOM
                case "dc": madv |= 1UL << 10; break; // MADV_DONTFORK
                case "dd": madv |= 1UL << 16; break; // MADV_DONTDUMP
                case "mg": madv |= 1UL << 12; break; // MADV_MERGEABLE
                case "hg": madv |= 1UL << 14; break; // MADV_HUGEPAGE
                case "nh": madv |= 1UL << 15; break; // MADV_NOHUGEPAGE
                case "wf": madv |= 1UL << 18; break; // MADV_WIPEONFORK
                case "io" or "pf": io = true; break;
            }
        }
        return (flags, madv, io);
    }

    /// <summary>Pages of a VMA that a dump saves.</summary>
    public static bool HasPages(vma_entry e) =>
        (e.Status & Regular) != 0 && (e.Status & (AnonPrivate | FilePrivate)) != 0 && (e.Status & Vvar) == 0;

    /// <summary>
    /// The pages to save, as pieces for the page pipeline and as pagemap entries (adjacent runs with
    /// the same flags merged, as CRIU's are). Returns the pages scanned too.
    /// </summary>
    public static (List<PageSegment> Segments, List<pagemap_entry> Entries, long Scanned) Pages(int pid, List<DumpedVma> vmas)
    {
        var segments = new List<PageSegment>();
        var entries = new List<pagemap_entry>();
        long scanned = 0;
        using var scanner = new PagemapScanner(pid);
        foreach (var (v, e) in vmas)
        {
            if (!HasPages(e))
                continue;
            scanned += (long)((e.End - e.Start) / PageMap.PageSize);
            bool vdso = (e.Status & Vdso) != 0;
            bool lazy = (e.Flags & MapAnonymous) != 0 && (e.Flags & (MapLocked | MapHugetlb)) == 0 && !vdso;
            bool forced = !v.IsReadable;
            var runs = vdso ? [new Linux.Memory.PageRun(e.Start, e.End, PageState.Present)] : scanner.Scan(e.Start, e.End);
            foreach (var run in runs)
            {
                // In a private file mapping only the copy-on-write pages are the process's own.
                if ((e.Status & FilePrivate) != 0 && (run.State & PageState.Swapped) == 0 && (run.State & PageState.File) != 0)
                    continue;
                AddSegments(segments, scanner, run, forced);
                uint flags = (uint)(PageFlags.Present | (lazy ? PageFlags.Lazy : 0));
                ulong pages = run.Length / PageMap.PageSize;
                if (entries.Count > 0 && entries[^1].Flags == flags && entries[^1].Vaddr + entries[^1].NrPages * PageMap.PageSize == run.Start)
                    entries[^1].NrPages += pages;
                else
                    entries.Add(new pagemap_entry { Vaddr = run.Start, CompatNrPages = 0, Flags = flags, NrPages = pages });
            }
        }
        return (segments, entries, scanned);
    }

    /// <summary>
    /// The pieces of one run. Pages still shared copy-on-write with another process are read
    /// through /proc/PID/mem: process_vm_readv pins what it reads, and pinning a shared anonymous
    /// page gives the process a copy of its own, which would undo the sharing of a whole tree.
    /// </summary>
    private static void AddSegments(List<PageSegment> segments, PagemapScanner scanner, Linux.Memory.PageRun run, bool forced)
    {
        var shared = forced || (run.State & PageState.Present) == 0 ? [] : scanner.SharedRuns(run.Start, run.End);
        ulong at = run.Start;
        foreach (var s in shared.Append(new Linux.Memory.PageRun(run.End, run.End, PageState.None)))
        {
            Add(at, s.Start, forced);
            Add(s.Start, s.End, true);
            at = s.End;
        }

        void Add(ulong start, ulong end, bool viaMem)
        {
            for (ulong a = start; a < end; a += SegmentBytes)
                segments.Add(new PageSegment(a, (int)Math.Min(SegmentBytes, end - a), viaMem));
        }
    }
}
