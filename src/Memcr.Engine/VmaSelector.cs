using Memcr.Image;
using Memcr.Linux.Proc;

namespace Memcr.Engine;

/// <summary>A VMA chosen for checkpoint: what planning needs of it (a program can have tens of thousands).</summary>
public readonly record struct SelectedVma(ulong Start, ulong End, ulong Offset, Protection Protection, VmaKind Kind)
{
    public ulong Length => End - Start;

    public bool IsReadable => (Protection & Protection.Read) != 0;
}

/// <summary>
/// Chooses the VMAs whose pages are saved and dropped: private anonymous memory, heap and stacks,
/// and with -f private file mappings. Shared, locked, special and hugetlb areas are left alone.
/// </summary>
public static class VmaSelector
{
    private static readonly HashSet<string> Specials = new(StringComparer.Ordinal)
    {
        "[vdso]", "[vvar]", "[vvar_vclock]", "[vsyscall]", "[uprobes]", "[sigpage]", "[vectors]",
    };

    /// <summary>
    /// The chosen VMAs of pid's smaps, read one at a time and kept in this compact form only;
    /// each VMA left alone goes to <paramref name="skipped"/> with the reason. VMAs registered with
    /// a userfaultfd are left alone, but for those <paramref name="tracked"/> says memcr's own write
    /// tracking registered.
    /// </summary>
    public static List<SelectedVma> Select(int pid, bool includeFiles, Action<Vma, string> skipped, Func<Vma, bool>? tracked = null)
    {
        var selected = new List<SelectedVma>();
        ProcFs.ReadSmaps(pid, vma =>
        {
            if (SkipReason(vma, includeFiles, tracked) is { } reason)
                skipped(vma, reason);
            else
                selected.Add(new SelectedVma(vma.Start, vma.End, vma.Offset, vma.Protection, KindOf(vma)));
        });
        return selected;
    }

    private static string? SkipReason(Vma vma, bool includeFiles, Func<Vma, bool>? tracked)
    {
        if (Specials.Contains(vma.Path))
            return "special";
        if (vma.Shared)
            return "shared";
        if (vma.HasFlag("ht"))
            return "hugetlb";
        if (vma.HasFlag("lo"))
            return "locked";
        if (vma.HasFlag("io") || vma.HasFlag("pf"))
            return "special (I/O or PFN mapping)";
        if (vma.HasFlag("um") || (vma.HasFlag("uw") && tracked?.Invoke(vma) != true))
            return "registered with userfaultfd";
        if (vma.IsFile)
            return includeFiles ? null : "file mapping (use -f to include)";
        if (vma.IsHeap || vma.IsStack || vma.IsAnonymous)
            return null;
        return "special";
    }

    private static VmaKind KindOf(Vma vma) =>
        vma.IsHeap ? VmaKind.Heap
        : vma.IsStack ? VmaKind.Stack
        : vma.IsFile ? VmaKind.File
        : VmaKind.Anonymous;

    /// <summary>
    /// In address-ordered, disjoint ranges (<paramref name="end"/> gives a range's end): the index
    /// of the first that ends after <paramref name="address"/>, or the count when none does.
    /// </summary>
    internal static int FirstEndingAfter<T>(IReadOnlyList<T> ranges, ulong address, Func<T, ulong> end)
    {
        int lo = 0, hi = ranges.Count;
        while (lo < hi)
        {
            int mid = (lo + hi) >>> 1;
            if (end(ranges[mid]) <= address)
                lo = mid + 1;
            else
                hi = mid;
        }
        return lo;
    }

    /// <summary>The runs of ranges (VMAs) that touch one another in an address-ordered sequence, each as one [Start, End) range.</summary>
    public static IEnumerable<(ulong Start, ulong End)> AdjacentSpans(IEnumerable<(ulong Start, ulong End)> ranges)
    {
        (ulong Start, ulong End)? run = null;
        foreach (var r in ranges)
        {
            if (run is { } current && current.End == r.Start)
            {
                run = (current.Start, r.End);
                continue;
            }
            if (run is { } done)
                yield return done;
            run = r;
        }
        if (run is { } last)
            yield return last;
    }

    public static string ShortName(VmaKind kind) => kind switch
    {
        VmaKind.Heap => "heap",
        VmaKind.Stack => "stck",
        VmaKind.File => "file",
        _ => "anon",
    };
}
