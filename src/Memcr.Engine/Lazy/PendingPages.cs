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
/// billion comparisons for 16 GiB). Records are numbered densely and nearly all are owed as one
/// extent, so that index is an array holding the extent, with a list only for a record owed in
/// several pieces: it is made while the process waits to run, and with a dictionary of a list per
/// record (and the extents listed through LINQ) that took 3 ms of the 8 ms for 8 GiB, now 0.3.
/// </summary>
internal sealed class PendingPages
{
    private readonly List<PendingExtent> _extents;
    /// <summary>Per record number: how many extents of it are owed; the one, while one is; all of them, while several are.</summary>
    private int[] _owedCount = [];
    private PendingExtent[] _single = [];
    private readonly Dictionary<int, List<PendingExtent>> _several = [];

    public PendingPages(IEnumerable<PendingExtent> extents)
    {
        _extents = [.. extents];
        // Owed record after record, which is address order but in a chain of incremental images.
        for (int i = 1; i < _extents.Count; i++)
        {
            if (_extents[i].Start < _extents[i - 1].Start)
            {
                _extents.Sort(static (a, b) => a.Start.CompareTo(b.Start));
                break;
            }
        }
        int records = 0;
        foreach (var e in _extents)
            records = Math.Max(records, e.Record + 1);
        _owedCount = new int[records];
        _single = new PendingExtent[records];
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

    /// <summary>The extents still owed of image record <paramref name="record"/>, in address order.</summary>
    public List<PendingExtent> OfRecord(int record)
    {
        int owed = record < _owedCount.Length ? _owedCount[record] : 0;
        if (owed <= 1)
            return owed == 0 ? [] : [_single[record]];
        var copy = new List<PendingExtent>(_several[record]);
        copy.Sort(static (a, b) => a.Start.CompareTo(b.Start));
        return copy;
    }

    /// <summary>Whether anything of record <paramref name="record"/> is owed.</summary>
    public bool Owes(int record) => record < _owedCount.Length && _owedCount[record] > 0;

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
        int r = e.Record;
        if (_owedCount[r] == 1)
        {
            _single[r] = default;
        }
        else
        {
            var owed = _several[r];
            owed.Remove(e);
            if (owed.Count == 1)
            {
                _single[r] = owed[0];
                _several.Remove(r);
            }
        }
        _owedCount[r]--;
    }

    private void Index(PendingExtent e)
    {
        int r = e.Record;
        if (r >= _owedCount.Length)
        {
            Array.Resize(ref _owedCount, r + 1);
            Array.Resize(ref _single, r + 1);
        }
        switch (_owedCount[r])
        {
            case 0:
                _single[r] = e;
                break;
            case 1:
                _several[r] = [_single[r], e];
                _single[r] = default;
                break;
            default:
                _several[r].Add(e);
                break;
        }
        _owedCount[r]++;
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
