using System.Buffers.Binary;
using Microsoft.Win32.SafeHandles;

namespace Memcr.Image;

/// <summary>
/// Streams an image: header, VMA table, page records, then index and end record. Appends are
/// sequential and must come from one thread at a time; payload checksums are computed by the
/// caller (<see cref="Checksum"/>) so that they can be computed in parallel with writing.
/// </summary>
public sealed class ImageWriter
{
    private readonly SafeFileHandle _file;
    private readonly string _path;
    private readonly List<IndexEntry> _index = [];
    private readonly byte[] _recordHeader = new byte[ImageFormat.RecordHeaderSize];
    private readonly ReadOnlyMemory<byte>[] _gather = new ReadOnlyMemory<byte>[2];
    private long _offset;
    private ulong _sequence;
    private ulong _pageBytes;
    private bool _finished;

    public ImageWriter(SafeFileHandle file, string path, ImageHeader header)
    {
        _file = file;
        _path = path;
        Header = header;
        var bytes = new byte[ImageFormat.FileHeaderSize];
        header.Write(bytes);
        RandomAccess.Write(_file, bytes, 0);
        _offset = bytes.Length;
    }

    public ImageHeader Header { get; }

    public string Path => _path;

    /// <summary>Bytes written so far.</summary>
    public long Length => _offset;

    public ulong PageBytes => _pageBytes;

    public IReadOnlyList<IndexEntry> Index => _index;

    /// <summary>The bytes an image of <paramref name="pageBytes"/> in <paramref name="records"/> records with <paramref name="vmas"/> VMAs takes.</summary>
    public static long SizeFor(int vmas, long records, long pageBytes) =>
        ImageFormat.FileHeaderSize
        + ImageFormat.RecordHeaderSize + (long)vmas * ImageFormat.VmaEntrySize
        + records * ImageFormat.RecordHeaderSize + pageBytes
        + ImageFormat.RecordHeaderSize + records * ImageFormat.IndexEntrySize
        + ImageFormat.RecordHeaderSize + ImageFormat.EndPayloadSize;

    public static ulong Checksum(ReadOnlySpan<byte> payload, ulong imageId) => ImageFormat.Hash(payload, imageId);

    public void WriteVmaTable(IReadOnlyList<ImageVma> vmas)
    {
        var payload = new byte[vmas.Count * ImageFormat.VmaEntrySize];
        for (int i = 0; i < vmas.Count; i++)
            vmas[i].Write(payload.AsSpan(i * ImageFormat.VmaEntrySize));
        Append(RecordType.VmaTable, 0, payload, Checksum(payload, Header.ImageId));
    }

    /// <summary>Appends one page record; returns the file offset at which it starts.</summary>
    public long AppendPages(ulong address, ReadOnlyMemory<byte> payload, ulong payloadChecksum)
    {
        if (payload.Length % Header.PageSize != 0)
            throw new ArgumentException($"page record of {payload.Length} bytes is not a whole number of pages", nameof(payload));
        long at = Append(RecordType.Pages, address, payload, payloadChecksum);
        _index.Add(new IndexEntry(address, payload.Length, at));
        _pageBytes += (ulong)payload.Length;
        return at;
    }

    /// <summary>Writes the index and the end record. The image is complete only after this.</summary>
    public void Finish()
    {
        if (_finished)
            return;
        var index = new byte[_index.Count * ImageFormat.IndexEntrySize];
        for (int i = 0; i < _index.Count; i++)
        {
            var span = index.AsSpan(i * ImageFormat.IndexEntrySize);
            BinaryPrimitives.WriteUInt64LittleEndian(span, _index[i].Address);
            BinaryPrimitives.WriteInt32LittleEndian(span[8..], _index[i].Length);
            BinaryPrimitives.WriteInt64LittleEndian(span[16..], _index[i].FileOffset);
        }
        long indexAt = Append(RecordType.Index, 0, index, Checksum(index, Header.ImageId));
        var end = new byte[ImageFormat.EndPayloadSize];
        BinaryPrimitives.WriteInt64LittleEndian(end, indexAt);
        BinaryPrimitives.WriteInt64LittleEndian(end.AsSpan(8), _index.Count);
        BinaryPrimitives.WriteUInt64LittleEndian(end.AsSpan(16), _pageBytes);
        BinaryPrimitives.WriteUInt64LittleEndian(end.AsSpan(24), _sequence + 1);
        Append(RecordType.End, 0, end, Checksum(end, Header.ImageId));
        _finished = true;
    }

    private long Append(RecordType type, ulong address, ReadOnlyMemory<byte> payload, ulong checksum)
    {
        if (_finished)
            throw new InvalidOperationException($"image {_path} is already finished");
        var header = new RecordHeader(type, Codec.None, ChecksumKind.XxHash3, Encryption.None, address,
            payload.Length, payload.Length, _sequence++, checksum);
        header.Write(_recordHeader, Header.ImageId);
        long at = _offset;
        _gather[0] = _recordHeader;
        _gather[1] = payload;
        RandomAccess.Write(_file, _gather, at);
        _offset += _recordHeader.Length + payload.Length;
        return at;
    }
}
