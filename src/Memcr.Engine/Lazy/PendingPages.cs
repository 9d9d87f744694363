namespace Memcr.Engine.Lazy;

/// <summary>
/// Pages of a lazily restored process that are still to come back: [Start, End) of the process
/// holds the bytes of record <see cref="Record"/> (its number in <see cref="LazyImages"/>) from
/// <see cref="Offset"/> on.
/// </summary>
internal readonly record struct PendingExtent(ulong Start, ulong End, int Record, int Offset)
{
    public ulong Length => End - Start;
}

/// <summary>
/// What a lazy restore still owes one address space, kept in address order. The process changes
/// its mappings as it runs: pages it discards (madvise, munmap) are no longer owed, and pages it
/// moves (mremap) are owed where they went. A fork gives the child a copy of what is owed.
/// The extents are also kept by record, as the fill asks of every record of the image whether
/// and where it is owed: a search of all extents each time would take quadratic time (about a
/// billion comparisons for 16 GiB).
/// </summary>
internal sealed class PendingPages
{
    private readonly List<PendingExtent> _extents;
    private readonly Dictionary<int, List<PendingExtent>> _byRecord = [];

    public PendingPages(IEnumerable<PendingExtent> extents)
    {
        _extents = [.. extents];
        _extents.Sort((a, b) => a.Start.CompareTo(b.Start));
        foreach (var e in _extents)
            Index(e);
    }

    public int Count => _extents.Count;

    public bool IsEmpty => _extents.Count == 0;

    public ulong Bytes => _extents.Aggregate(0UL, (sum, e) => sum + e.Length);

    public PendingPages Clone() => new(_extents);

    /// <summary>The extent that holds <paramref name="address"/>, if one does.</summary>
    public PendingExtent? Find(ulong address)
    {
        int i = IndexAfter(address) - 1;
        return i >= 0 && _extents[i].End > address ? _extents[i] : null;
    }

    /// <summary>The extents still owed of image record <paramref name="record"/>.</summary>
    public List<PendingExtent> OfRecord(int record)
    {
        if (!_byRecord.TryGetValue(record, out var owed))
            return [];
        var copy = new List<PendingExtent>(owed);
        copy.Sort((a, b) => a.Start.CompareTo(b.Start));
        return copy;
    }

    /// <summary>Whether anything of record <paramref name="record"/> is owed.</summary>
    public bool Owes(int record) => _byRecord.ContainsKey(record);

    /// <summary>The first extent in address order, if any.</summary>
    public PendingExtent? First => _extents.Count > 0 ? _extents[0] : null;

    /// <summary>[start, end) came back, or was discarded: nothing of it is owed any more.</summary>
    public void Remove(ulong start, ulong end) => Cut(start, end, null);

    /// <summary>The process moved [from, from + length) to <paramref name="to"/> (mremap): what was owed there is owed at the new place.</summary>
    public void Move(ulong from, ulong to, ulong length)
    {
        var moved = new List<PendingExtent>();
        Cut(from, from + length, moved);
        // Whatever was owed where the pages went is gone: mremap unmapped it first.
        Cut(to, to + length, null);
        foreach (var e in moved)
            Add(e with { Start = e.Start - from + to, End = e.End - from + to });
    }

    /// <summary>Takes [start, end) out of every extent, keeping the parts outside it; what was inside goes to <paramref name="taken"/>.</summary>
    private void Cut(ulong start, ulong end, List<PendingExtent>? taken)
    {
        int i = Math.Max(0, IndexAfter(start) - 1);
        while (i < _extents.Count && _extents[i].Start < end)
        {
            var e = _extents[i];
            if (e.End <= start)
            {
                i++;
                continue;
            }
            RemoveAt(i);
            if (e.Start < start)
                Insert(i++, e with { End = start });
            ulong innerStart = Math.Max(e.Start, start), innerEnd = Math.Min(e.End, end);
            taken?.Add(new PendingExtent(innerStart, innerEnd, e.Record, e.Offset + (int)(innerStart - e.Start)));
            if (e.End > end)
                Insert(i++, e with { Start = end, Offset = e.Offset + (int)(end - e.Start) });
        }
    }

    /// <summary>Owes <paramref name="e"/>, which must not overlap what is owed already.</summary>
    public void Add(PendingExtent e) => Insert(IndexAfter(e.Start), e);

    private void Insert(int index, PendingExtent e)
    {
        _extents.Insert(index, e);
        Index(e);
    }

    private void RemoveAt(int index)
    {
        var e = _extents[index];
        _extents.RemoveAt(index);
        var owed = _byRecord[e.Record];
        owed.Remove(e);
        if (owed.Count == 0)
            _byRecord.Remove(e.Record);
    }

    private void Index(PendingExtent e)
    {
        if (!_byRecord.TryGetValue(e.Record, out var owed))
            _byRecord[e.Record] = owed = [];
        owed.Add(e);
    }

    /// <summary>The index of the first extent that starts after <paramref name="address"/>.</summary>
    private int IndexAfter(ulong address)
    {
        int lo = 0, hi = _extents.Count;
        while (lo < hi)
        {
            int mid = (lo + hi) >>> 1;
            if (_extents[mid].Start <= address)
                lo = mid + 1;
            else
                hi = mid;
        }
        return lo;
    }
}
