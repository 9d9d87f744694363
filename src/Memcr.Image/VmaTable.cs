using System.Collections;

namespace Memcr.Image;

/// <summary>
/// An image's VMA table, kept as the bytes the image stores (<see cref="ImageFormat.VmaEntrySize"/>
/// for each VMA) and decoded when an entry is read: a process can have tens of thousands of VMAs,
/// and memcr holds their table while it writes an image and when it opens one.
/// </summary>
public sealed class VmaTable : IReadOnlyList<ImageVma>
{
    private byte[] _bytes;

    /// <summary>An empty table with room for <paramref name="capacity"/> entries before it grows.</summary>
    public VmaTable(int capacity = 0) => _bytes = new byte[capacity * ImageFormat.VmaEntrySize];

    public VmaTable(IEnumerable<ImageVma> vmas)
        : this()
    {
        foreach (var v in vmas)
            Add(v);
    }

    /// <summary>A table over the payload of a VMA table record (a whole number of entries).</summary>
    internal static VmaTable Over(byte[] payload) => new() { _bytes = payload, Count = payload.Length / ImageFormat.VmaEntrySize };

    public int Count { get; private set; }

    /// <summary>The entries as the image stores them.</summary>
    public ReadOnlySpan<byte> Bytes => _bytes.AsSpan(0, Count * ImageFormat.VmaEntrySize);

    public ImageVma this[int index] =>
        (uint)index < (uint)Count ? ImageVma.Read(_bytes.AsSpan(index * ImageFormat.VmaEntrySize)) : throw new ArgumentOutOfRangeException(nameof(index));

    public void Add(ImageVma vma)
    {
        int at = Count * ImageFormat.VmaEntrySize;
        if (at == _bytes.Length)
            Array.Resize(ref _bytes, Math.Max(16 * ImageFormat.VmaEntrySize, _bytes.Length * 2));
        vma.Write(_bytes.AsSpan(at));
        Count++;
    }

    public IEnumerator<ImageVma> GetEnumerator()
    {
        for (int i = 0; i < Count; i++)
            yield return this[i];
    }

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();
}
