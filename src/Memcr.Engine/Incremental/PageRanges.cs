using Memcr.Image;

namespace Memcr.Engine.Incremental;

/// <summary>Sets of pages as sorted, disjoint address ranges: what a chain of images holds, and where.</summary>
internal static class PageRanges
{
    /// <summary>The pages in both.</summary>
    public static List<KeptRange> Intersect(IReadOnlyList<KeptRange> a, IReadOnlyList<KeptRange> b)
    {
        var both = new List<KeptRange>();
        int i = 0, j = 0;
        while (i < a.Count && j < b.Count)
        {
            ulong start = Math.Max(a[i].Start, b[j].Start), end = Math.Min(a[i].End, b[j].End);
            if (start < end)
                both.Add(new KeptRange(start, end));
            if (a[i].End < b[j].End)
                i++;
            else
                j++;
        }
        return both;
    }

    /// <summary>The pages in either.</summary>
    public static List<KeptRange> Union(IReadOnlyList<KeptRange> a, IReadOnlyList<KeptRange> b)
    {
        var all = new List<KeptRange>(a.Count + b.Count);
        int i = 0, j = 0;
        while (i < a.Count || j < b.Count)
        {
            var next = j >= b.Count || (i < a.Count && a[i].Start <= b[j].Start) ? a[i++] : b[j++];
            Add(all, next.Start, next.End);
        }
        return all;
    }

    /// <summary>Appends [start, end) to ranges built in address order, merging it with the last one when they touch.</summary>
    public static void Add(List<KeptRange> ranges, ulong start, ulong end)
    {
        if (ranges.Count > 0 && ranges[^1].End >= start)
        {
            if (end > ranges[^1].End)
                ranges[^1] = ranges[^1] with { End = end };
            return;
        }
        ranges.Add(new KeptRange(start, end));
    }

    public static ulong Bytes(IReadOnlyList<KeptRange> ranges) => ranges.Aggregate(0UL, (sum, r) => sum + (r.End - r.Start));

    /// <summary>The pages an image's own records hold.</summary>
    public static List<KeptRange> Held(ImageReader image)
    {
        var held = new List<KeptRange>(image.Index.Count);
        foreach (var e in image.Index)
            Add(held, e.Address, e.End);
        return held;
    }

    /// <summary>The parts of [start, end) outside <paramref name="ranges"/> (none when null), in order.</summary>
    public static IEnumerable<(ulong Start, ulong End)> Outside(IReadOnlyList<KeptRange>? ranges, ulong start, ulong end)
    {
        ulong at = start;
        if (ranges is not null)
        {
            foreach (var r in Within(ranges, start, end))
            {
                if (r.Start > at)
                    yield return (at, r.Start);
                at = r.End;
            }
        }
        if (at < end)
            yield return (at, end);
    }

    /// <summary>The parts of [start, end) that <paramref name="ranges"/> hold, in order.</summary>
    public static IEnumerable<KeptRange> Within(IReadOnlyList<KeptRange> ranges, ulong start, ulong end)
    {
        for (int i = VmaSelector.FirstEndingAfter(ranges, start, r => r.End); i < ranges.Count && ranges[i].Start < end; i++)
            yield return new KeptRange(Math.Max(start, ranges[i].Start), Math.Min(end, ranges[i].End));
    }
}
