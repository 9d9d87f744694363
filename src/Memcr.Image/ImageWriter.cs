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
    private readonly System.Collections.Concurrent.ConcurrentBag<AlignedBuffer> _blocks = [];
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
        var slot = ReservePages(address, payload.Length);
        WritePages(slot, payload, payloadChecksum);
        return slot.HeaderOffset;
    }

    /// <summary>
    /// Gives the next page record its place in the file, its number and its index entry. Call in
    /// address order from one thread; the record may then be written by any thread with
    /// <see cref="WritePages"/>, concurrently with others.
    /// </summary>
    public PageSlot ReservePages(ulong address, int length)
    {
        CheckOpen();
        if (length <= 0 || length % Header.PageSize != 0)
            throw new ArgumentException($"page record of {length} bytes is not a whole number of pages", nameof(length));
        long headerAt = ImageFormat.NextPageRecord(_offset, Header.PageSize);
        var slot = new PageSlot(headerAt, _sequence++, address, length);
        _offset = headerAt + ImageFormat.RecordHeaderSize + length;
        _index.Add(new IndexEntry(address, length, headerAt));
        _pageBytes += (ulong)length;
        return slot;
    }

    /// <summary>Writes a reserved page record: a page of zero padding ending in its header, then the payload.</summary>
    public void WritePages(in PageSlot slot, ReadOnlyMemory<byte> payload, ulong payloadChecksum)
    {
        if (payload.Length != slot.Length)
            throw new ArgumentException($"payload of {payload.Length} bytes for a record of {slot.Length}", nameof(payload));
        int pageSize = Header.PageSize;
        if (!_blocks.TryTake(out var block))
            block = new AlignedBuffer(pageSize, pageSize);
        try
        {
            var span = block.GetSpan();
            span.Clear();
            new RecordHeader(RecordType.Pages, Codec.None, ChecksumKind.XxHash3, Encryption.None, slot.Address,
                    payload.Length, payload.Length, slot.Sequence, payloadChecksum)
                .Write(span[(pageSize - ImageFormat.RecordHeaderSize)..], Header.ImageId);
            // Both the padding page and the payload are page-aligned: fit for O_DIRECT.
            RandomAccess.Write(_pages, [block.Memory, payload], slot.HeaderOffset + ImageFormat.RecordHeaderSize - pageSize);
        }
        finally
        {
            _blocks.Add(block);
        }
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

    public void Dispose()
    {
        while (_blocks.TryTake(out var block))
            ((IDisposable)block).Dispose();
    }
}

/// <summary>A page record's reserved place: header offset, record number, address and length.</summary>
public readonly record struct PageSlot(long HeaderOffset, ulong Sequence, ulong Address, int Length);
