using Memcr.CriuImages;
using Memcr.CriuImages.Pages;
using Memcr.Linux.Kernel;
using Microsoft.Win32.SafeHandles;

namespace Memcr.Dump.Dumping;

/// <summary>
/// The contents of a memfd (or of shared anonymous memory) as CRIU keeps them: the pages of its
/// data ranges (holes left out) in pages-N.img, indexed by pagemap-shmem-SHMID.img whose
/// addresses are offsets in the file.
/// </summary>
internal static class SharedMemory
{
    public static string PagemapName(uint shmid) => $"pagemap-shmem-{shmid}.img";

    public static void Dump(memfd_inode_entry inode, SafeFileHandle file, uint pagesId, Func<string, string> path)
    {
        using var pagemap = CriuImageWriter.Create(path(PagemapName(inode.Shmid)), ImageKinds.Pagemap);
        pagemap.Write(new pagemap_head { PagesId = pagesId });
        using var pages = File.OpenHandle(path($"pages-{pagesId}.img"), FileMode.Create, FileAccess.Write);
        var buffer = new byte[1 << 20];
        long written = 0;
        long size = (long)inode.Size;
        foreach (var (start, end) in FileCalls.DataRanges(file, size))
        {
            long from = start / PageMap.PageSize * PageMap.PageSize;
            long to = Math.Min((end + PageMap.PageSize - 1) / PageMap.PageSize * PageMap.PageSize, (size + PageMap.PageSize - 1) / PageMap.PageSize * PageMap.PageSize);
            if (to <= from)
                continue;
            pagemap.Write(new pagemap_entry { Vaddr = (ulong)from, CompatNrPages = 0, Flags = (uint)PageFlags.Present, NrPages = (ulong)((to - from) / PageMap.PageSize) });
            for (long at = from; at < to; at += buffer.Length)
            {
                int n = (int)Math.Min(buffer.Length, to - at);
                var chunk = buffer.AsSpan(0, n);
                chunk.Clear();
                RandomAccess.Read(file, chunk, at); // past the end of the file reads as zeros
                RandomAccess.Write(pages, chunk, written);
                written += n;
            }
        }
    }
}
