using Memcr.Image;
using Memcr.Linux.Proc;

namespace Memcr.Engine;

/// <summary>A VMA chosen for checkpoint.</summary>
public sealed record SelectedVma(Vma Vma, VmaKind Kind);

/// <summary>A VMA left alone, and why.</summary>
public sealed record SkippedVma(Vma Vma, string Reason);

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

    public static (List<SelectedVma> Selected, List<SkippedVma> Skipped) Select(IEnumerable<Vma> vmas, bool includeFiles)
    {
        var selected = new List<SelectedVma>();
        var skipped = new List<SkippedVma>();
        foreach (var vma in vmas)
        {
            string? reason = SkipReason(vma, includeFiles);
            if (reason is null)
                selected.Add(new SelectedVma(vma, KindOf(vma)));
            else
                skipped.Add(new SkippedVma(vma, reason));
        }
        return (selected, skipped);
    }

    private static string? SkipReason(Vma vma, bool includeFiles)
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
        if (vma.HasFlag("um") || vma.HasFlag("uw"))
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

    /// <summary>The runs of VMAs that touch one another in an address-ordered list, each as one [Start, End) range.</summary>
    public static IEnumerable<(ulong Start, ulong End)> AdjacentSpans(IReadOnlyList<SelectedVma> vmas)
    {
        for (int i = 0; i < vmas.Count;)
        {
            int j = i;
            while (j + 1 < vmas.Count && vmas[j + 1].Vma.Start == vmas[j].Vma.End)
                j++;
            yield return (vmas[i].Vma.Start, vmas[j].Vma.End);
            i = j + 1;
        }
    }

    public static string ShortName(VmaKind kind) => kind switch
    {
        VmaKind.Heap => "heap",
        VmaKind.Stack => "stck",
        VmaKind.File => "file",
        _ => "anon",
    };
}
