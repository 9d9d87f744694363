using Microsoft.Win32.SafeHandles;

namespace Memcr.CriuImages.Pages;

/// <summary>
/// Writes the pages of one process as CRIU does: pagemap-PID.img (a head naming pages-N.img, then
/// one entry per run) and the runs' bytes appended to pages-N.img, in address order.
/// </summary>
public sealed class PageImageWriter : IDisposable
{
    private readonly CriuImageWriter _pagemap;
    private readonly SafeFileHandle _pages;
    private ulong _lastEnd;

    public PageImageWriter(string dir, long pid, uint pagesId)
    {
        PagesPath = Path.Combine(dir, $"pages-{pagesId}.img");
        _pagemap = CriuImageWriter.Create(Path.Combine(dir, ImageKinds.Pagemap.FileNameFor(pid)), ImageKinds.Pagemap);
        try
        {
            _pagemap.Write(new pagemap_head { PagesId = pagesId });
            _pages = File.OpenHandle(PagesPath, FileMode.Create, FileAccess.Write);
        }
        catch
        {
            _pagemap.Dispose();
            throw;
        }
    }

    public string PagesPath { get; }

    /// <summary>Bytes written to pages-N.img.</summary>
    public long PageBytes { get; private set; }

    /// <summary>Pagemap entries written.</summary>
    public int Runs { get; private set; }

    /// <summary>A run of pages whose bytes go into pages-N.img.</summary>
    public void Add(ulong address, ReadOnlySpan<byte> pages, PageFlags flags = PageFlags.Present)
    {
        if (pages.Length % PageMap.PageSize != 0)
            throw new ArgumentException($"{pages.Length} bytes is not a whole number of pages", nameof(pages));
        Entry(address, (ulong)(pages.Length / PageMap.PageSize), flags | PageFlags.Present);
        RandomAccess.Write(_pages, pages, PageBytes);
        PageBytes += pages.Length;
    }

    /// <summary>A run of pages whose bytes are in the parent images (a pre-dump).</summary>
    public void AddInParent(ulong address, ulong pages) => Entry(address, pages, PageFlags.Parent);

    private void Entry(ulong address, ulong pages, PageFlags flags)
    {
        if (address % PageMap.PageSize != 0 || address < _lastEnd || pages == 0)
            throw new ArgumentException($"page run 0x{address:x} ({pages} pages) is unaligned, empty or out of address order", nameof(address));
        _lastEnd = address + pages * PageMap.PageSize;
        _pagemap.Write(new pagemap_entry { Vaddr = address, CompatNrPages = 0, Flags = (uint)flags, NrPages = pages });
        Runs++;
    }

    public void Dispose()
    {
        _pagemap.Dispose();
        _pages.Dispose();
    }
}
