using Google.Protobuf;

namespace Memcr.CriuImages.Explore;

/// <summary>A directory of CRIU images: its files by kind, read on demand and kept once read.</summary>
public sealed class DumpDirectory(string path)
{
    private readonly Dictionary<string, object> _cache = new(StringComparer.Ordinal);

    public string Path { get; } = path;

    public string FileOf(ImageKind kind, long? id = null) =>
        System.IO.Path.Combine(Path, id is { } n ? kind.FileNameFor(n) : kind.FileName);

    public bool Has(ImageKind kind, long? id = null) => File.Exists(FileOf(kind, id));

    /// <summary>Every entry of an image, typed.</summary>
    public IReadOnlyList<T> All<T>(ImageKind kind, long? id = null) where T : class, IMessage<T>
    {
        string file = FileOf(kind, id);
        if (_cache.TryGetValue(file, out var cached))
            return (IReadOnlyList<T>)cached;
        using var reader = CriuImageReader.Open(file, kind);
        var entries = reader.ReadAll<T>().ToList();
        _cache[file] = entries;
        return entries;
    }

    /// <summary>The only entry of a one-entry image (core, mm, fs, ids).</summary>
    public T One<T>(ImageKind kind, long id) where T : class, IMessage<T> =>
        All<T>(kind, id) is [var first, ..] ? first : throw new CriuImageException(FileOf(kind, id), 0, $"no entry: a {kind.Name} image holds one");

    public IReadOnlyList<pstree_entry> Tree => All<pstree_entry>(ImageKinds.Pstree);

    /// <summary>The head and the page runs of pagemap-PID.img.</summary>
    public (pagemap_head Head, List<pagemap_entry> Entries) Pagemap(long pid)
    {
        string file = FileOf(ImageKinds.Pagemap, pid);
        using var reader = CriuImageReader.Open(file, ImageKinds.Pagemap);
        var head = reader.ReadRaw()?.Message as pagemap_head ?? throw new CriuImageException(file, 8, "no pagemap head");
        var entries = new List<pagemap_entry>();
        while (reader.ReadRaw() is { } e)
            entries.Add((pagemap_entry)e.Message);
        return (head, entries);
    }
}
