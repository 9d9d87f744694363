using Microsoft.Win32.SafeHandles;

namespace Memcr.CriuImages.Pages;

/// <summary>
/// The pages of one pagemap, read from its pages-N.img with positioned reads: any page by address,
/// or every run in file order through large sequential reads (the disk's speed, not a read per page).
/// </summary>
public sealed class PagesReader : IDisposable
{
    /// <summary>Size of one sequential read in <see cref="ReadAll"/>.</summary>
    public const int ChunkBytes = 8 << 20;

    private readonly SafeFileHandle _file;

    private PagesReader(PageMap map, string path, SafeFileHandle file)
    {
        Map = map;
        Path = path;
        _file = file;
        long length = RandomAccess.GetLength(file);
        if (length != map.PageBytes)
            throw new CriuImageException(path, Math.Min(length, map.PageBytes), $"{length} bytes, but {System.IO.Path.GetFileName(map.Path)} lists {map.PageBytes} bytes of pages in it");
    }

    public PageMap Map { get; }

    public string Path { get; }

    /// <summary>
    /// Opens the pages-N.img of <paramref name="map"/> in <paramref name="dir"/>; its size must be what
    /// the map lists. With <paramref name="direct"/> reads bypass the page cache (O_DIRECT, where
    /// the file system allows it): buffers, offsets and lengths must then be page-aligned.
    /// </summary>
    public static PagesReader Open(string dir, PageMap map, bool direct = false)
    {
        string path = System.IO.Path.Combine(dir, $"pages-{map.PagesId}.img");
        SafeFileHandle? file = direct ? Linux.FileOps.OpenDirect(path, write: false) : null;
        file ??= File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read, FileOptions.SequentialScan);
        try
        {
            return new PagesReader(map, path, file);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    /// <summary>Reads the bytes at <paramref name="address"/> into <paramref name="into"/>; false if a page there is not in this file.</summary>
    public bool TryRead(ulong address, Span<byte> into)
    {
        while (!into.IsEmpty)
        {
            if (Map.Find(address) is not { InFile: true } run)
                return false;
            int n = (int)Math.Min((ulong)into.Length, run.End - address);
            ReadExactly(run.FileOffset + (long)(address - run.Address), into[..n]);
            into = into[n..];
            address += (ulong)n;
        }
        return true;
    }

    /// <summary>
    /// Every present run in file order, in pieces of at most <see cref="ChunkBytes"/>: the action gets
    /// the address of the piece and its bytes (valid only during the call).
    /// </summary>
    public void ReadAll(Action<ulong, ReadOnlySpan<byte>> piece)
    {
        var buffer = GC.AllocateUninitializedArray<byte>(ChunkBytes, pinned: true);
        foreach (var run in Map.Runs.Where(r => r.InFile))
        {
            for (long done = 0; done < run.Bytes; done += ChunkBytes)
            {
                int n = (int)Math.Min(ChunkBytes, run.Bytes - done);
                ReadExactly(run.FileOffset + done, buffer.AsSpan(0, n));
                piece(run.Address + (ulong)done, buffer.AsSpan(0, n));
            }
        }
    }

    /// <summary>Reads <paramref name="into"/> from pages-N.img at <paramref name="offset"/> (a positioned read: threads may share the reader).</summary>
    public void ReadAt(long offset, Span<byte> into) => ReadExactly(offset, into);

    private void ReadExactly(long offset, Span<byte> into)
    {
        while (!into.IsEmpty)
        {
            int n = RandomAccess.Read(_file, into, offset);
            if (n == 0)
                throw new CriuImageException(Path, offset, "truncated: the file ends inside a run of pages");
            into = into[n..];
            offset += n;
        }
    }

    public void Dispose() => _file.Dispose();
}
