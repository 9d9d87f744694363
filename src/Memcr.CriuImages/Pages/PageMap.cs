namespace Memcr.CriuImages.Pages;

/// <summary>pagemap_entry flags (PE_*).</summary>
[Flags]
public enum PageFlags : uint
{
    None = 0,

    /// <summary>The pages are in the parent (pre-dump) images.</summary>
    Parent = 1,

    /// <summary>The pages may be restored lazily (CRIU sets it on private anonymous memory).</summary>
    Lazy = 2,

    /// <summary>The pages are in this dump's pages-N.img.</summary>
    Present = 4,
}

/// <summary>A run of pages of a pagemap, and where its bytes are in pages-N.img (-1 when they are not there).</summary>
public readonly record struct PageRun(ulong Address, ulong Pages, PageFlags Flags, long FileOffset)
{
    public ulong End => Address + Pages * PageMap.PageSize;

    public long Bytes => (long)Pages * PageMap.PageSize;

    public bool InFile => FileOffset >= 0;
}

/// <summary>
/// pagemap-PID.img, read whole (it is small: one entry per run of pages): which pages-N.img holds
/// the pages, and every run with its offset in that file, in address order.
/// </summary>
public sealed class PageMap
{
    /// <summary>CRIU images count pages of 4 KiB (crit assumes it too).</summary>
    public const int PageSize = 4096;

    private PageMap(string path, uint pagesId, List<PageRun> runs)
    {
        Path = path;
        PagesId = pagesId;
        Runs = runs;
        PageBytes = runs.Where(r => r.InFile).Sum(r => r.Bytes);
    }

    public string Path { get; }

    public uint PagesId { get; }

    public IReadOnlyList<PageRun> Runs { get; }

    /// <summary>Bytes of pages this pagemap puts in its pages-N.img.</summary>
    public long PageBytes { get; }

    public static PageMap Read(string dir, long pid) => Read(System.IO.Path.Combine(dir, ImageKinds.Pagemap.FileNameFor(pid)));

    public static PageMap Read(string path)
    {
        using var reader = CriuImageReader.Open(path, ImageKinds.Pagemap);
        var head = reader.Read<pagemap_head>() ?? throw new CriuImageException(path, reader.Position, "no pagemap head");
        var runs = new List<PageRun>();
        long offset = 0;
        ulong lastEnd = 0;
        while (reader.ReadRaw() is { } raw)
        {
            var e = (pagemap_entry)raw.Message;
            ulong pages = e.HasNrPages ? e.NrPages : e.CompatNrPages;
            // Images older than the flags field say "in parent" with a bool; the rest is present.
            var flags = e.HasFlags ? (PageFlags)e.Flags : e.InParent ? PageFlags.Parent : PageFlags.Present;
            if (e.Vaddr % PageSize != 0 || e.Vaddr < lastEnd || pages > (ulong.MaxValue - e.Vaddr) / PageSize)
                throw new CriuImageException(path, raw.Offset, $"page run 0x{e.Vaddr:x} ({pages} pages) is unaligned, out of order or overlaps the one before");
            lastEnd = e.Vaddr + pages * PageSize;
            bool present = (flags & PageFlags.Present) != 0;
            runs.Add(new PageRun(e.Vaddr, pages, flags, present ? offset : -1));
            if (present)
                offset += (long)pages * PageSize;
        }
        return new PageMap(path, head.PagesId, runs);
    }

    /// <summary>The run holding <paramref name="address"/>, or null.</summary>
    public PageRun? Find(ulong address)
    {
        int lo = 0, hi = Runs.Count - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >>> 1;
            var r = Runs[mid];
            if (address < r.Address)
                hi = mid - 1;
            else if (address >= r.End)
                lo = mid + 1;
            else
                return r;
        }
        return null;
    }
}
