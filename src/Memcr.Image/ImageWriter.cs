using System.Buffers.Binary;
using Microsoft.Win32.SafeHandles;

namespace Memcr.Image;

/// <summary>
/// Streams an image: header, VMA table, page records, then index and end record. Appends are
/// sequential and must come from one thread at a time; payload checksums are computed by the
/// caller (<see cref="Checksum"/>) so that they can be computed in parallel with writing.
/// Page payloads start on page boundaries, so they can be written with O_DIRECT through
/// <c>pageFile</c> (payload memory must then be page-aligned, e.g. an <see cref="AlignedBuffer"/>).
/// </summary>
public sealed class ImageWriter : IDisposable
{
    private readonly SafeFileHandle _file;
    private readonly SafeFileHandle _pages;
    private readonly string _path;
    private readonly List<IndexEntry> _index = [];
    private readonly AlignedBuffer _block;
    private readonly ReadOnlyMemory<byte>[] _gather = new ReadOnlyMemory<byte>[2];
    private long _offset;
    private ulong _sequence;
    private ulong _pageBytes;
    private bool _finished;

    public ImageWriter(SafeFileHandle file, string path, ImageHeader header, SafeFileHandle? pageFile = null)
    {
        _file = file;
        _pages = pageFile ?? file;
        _path = path;
        Header = header;
        _block = new AlignedBuffer(header.PageSize, header.PageSize);
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

    /// <summary>The size of an image with <paramref name="vmas"/> VMAs and page records of the given lengths.</summary>
    public static long SizeFor(int vmas, IEnumerable<int> recordLengths, int pageSize)
    {
        long end = ImageFormat.FileHeaderSize + ImageFormat.RecordHeaderSize + (long)vmas * ImageFormat.VmaEntrySize;
        long records = 0;
        foreach (int length in recordLengths)
        {
            end = ImageFormat.NextPageRecord(end, pageSize) + ImageFormat.RecordHeaderSize + length;
            records++;
        }
        return end + ImageFormat.RecordHeaderSize + records * ImageFormat.IndexEntrySize
            + ImageFormat.RecordHeaderSize + ImageFormat.EndPayloadSize;
    }

    public static ulong Checksum(ReadOnlySpan<byte> payload, ulong imageId) => ImageFormat.Hash(payload, imageId);

    public void WriteVmaTable(IReadOnlyList<ImageVma> vmas)
    {
        var payload = new byte[vmas.Count * ImageFormat.VmaEntrySize];
        for (int i = 0; i < vmas.Count; i++)
            vmas[i].Write(payload.AsSpan(i * ImageFormat.VmaEntrySize));
        Append(RecordType.VmaTable, payload);
    }

    /// <summary>Appends one page record; returns the file offset of its header.</summary>
    public long AppendPages(ulong address, ReadOnlyMemory<byte> payload, ulong payloadChecksum)
    {
        CheckOpen();
        int pageSize = Header.PageSize;
        if (payload.Length == 0 || payload.Length % pageSize != 0)
            throw new ArgumentException($"page record of {payload.Length} bytes is not a whole number of pages", nameof(payload));
        long headerAt = ImageFormat.NextPageRecord(_offset, pageSize);
        long blockAt = headerAt + ImageFormat.RecordHeaderSize - pageSize;
        var block = _block.GetSpan();
        block.Clear();
        new RecordHeader(RecordType.Pages, Codec.None, ChecksumKind.XxHash3, Encryption.None, address,
                payload.Length, payload.Length, _sequence++, payloadChecksum)
            .Write(block[(pageSize - ImageFormat.RecordHeaderSize)..], Header.ImageId);
        // One page of zero padding and header, then the payload: both page-aligned for O_DIRECT.
        _gather[0] = _block.Memory;
        _gather[1] = payload;
        RandomAccess.Write(_pages, _gather, blockAt);
        _offset = headerAt + ImageFormat.RecordHeaderSize + payload.Length;
        _index.Add(new IndexEntry(address, payload.Length, headerAt));
        _pageBytes += (ulong)payload.Length;
        return headerAt;
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
        long indexAt = Append(RecordType.Index, index);
        var end = new byte[ImageFormat.EndPayloadSize];
        BinaryPrimitives.WriteInt64LittleEndian(end, indexAt);
        BinaryPrimitives.WriteInt64LittleEndian(end.AsSpan(8), _index.Count);
        BinaryPrimitives.WriteUInt64LittleEndian(end.AsSpan(16), _pageBytes);
        BinaryPrimitives.WriteUInt64LittleEndian(end.AsSpan(24), _sequence + 1);
        Append(RecordType.End, end);
        _finished = true;
    }

    private long Append(RecordType type, byte[] payload)
    {
        CheckOpen();
        var record = new byte[ImageFormat.RecordHeaderSize + payload.Length];
        new RecordHeader(type, Codec.None, ChecksumKind.XxHash3, Encryption.None, 0, payload.Length, payload.Length,
                _sequence++, Checksum(payload, Header.ImageId))
            .Write(record, Header.ImageId);
        payload.CopyTo(record, ImageFormat.RecordHeaderSize);
        long at = _offset;
        RandomAccess.Write(_file, record, at);
        _offset += record.Length;
        return at;
    }

    private void CheckOpen()
    {
        if (_finished)
            throw new InvalidOperationException($"image {_path} is already finished");
    }

    public void Dispose() => ((IDisposable)_block).Dispose();
}
