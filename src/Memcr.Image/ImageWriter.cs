using System.Buffers.Binary;
using Memcr.Linux.Memory;
using Microsoft.Win32.SafeHandles;

namespace Memcr.Image;

/// <summary>
/// Streams an image: header, VMA table, page records, then index and end record.
/// <para>
/// Plain images (no codec, no encryption) put every page payload on a page boundary: each record is
/// given its place up front (<see cref="ReservePages"/>, in order) and written by any thread
/// (<see cref="WritePages"/>), straight from the caller's page-aligned buffer, so with O_DIRECT
/// through <c>pageFile</c>. Payload checksums are computed by the caller.
/// </para>
/// <para>
/// Packed images (compressed or encrypted, <see cref="ImageFlags.Packed"/>) have records back to
/// back, encoded by the caller (<see cref="RecordEncoder"/>, in parallel) and appended in order
/// with <see cref="AppendRecord"/>; they are staged in a large aligned buffer and written in whole
/// pages, so O_DIRECT works for them too. The file is padded to a page at the end: truncate it to
/// <see cref="Length"/> after <see cref="Finish"/>.
/// </para>
/// </summary>
public sealed class ImageWriter : IDisposable
{
    private readonly SafeFileHandle _file;
    private readonly SafeFileHandle _pages;
    private readonly bool _direct;
    private readonly string _path;
    /// <summary>Writer threads set plain records' checksums here while more are added: used under its lock.</summary>
    private readonly List<IndexEntry> _index = [];
    private readonly System.Collections.Concurrent.ConcurrentBag<AlignedBuffer> _blocks = [];
    private readonly AlignedBuffer? _staging;
    private long _stagingStart;
    private int _staged;
    private long _offset;
    private ulong _sequence;
    private ulong _pageBytes;
    private ulong _storedBytes;
    private bool _finished;

    /// <summary>
    /// Starts an image. Packed records are staged in a buffer of <paramref name="stagingBytes"/>
    /// (a multiple of the page size) and written a full buffer at a time.
    /// </summary>
    public ImageWriter(SafeFileHandle file, string path, ImageHeader header, SafeFileHandle? pageFile = null, int stagingBytes = 8 << 20)
    {
        _file = file;
        _pages = pageFile ?? file;
        _direct = pageFile is not null;
        _path = path;
        Header = header;
        var bytes = new byte[ImageFormat.FileHeaderSize];
        header.Write(bytes);
        if (header.Packed)
        {
            if (stagingBytes <= 0 || stagingBytes % header.PageSize != 0)
                throw new ArgumentException($"a staging buffer of {stagingBytes} bytes is not a whole number of pages", nameof(stagingBytes));
            _staging = new AlignedBuffer(stagingBytes, Math.Max(header.PageSize, 4096));
            Stage(bytes);
        }
        else
        {
            RandomAccess.Write(_file, bytes, 0);
        }
        _offset = bytes.Length;
    }

    public ImageHeader Header { get; }

    public string Path => _path;

    /// <summary>Bytes of the image so far (the file may be longer: packed images are padded until truncated).</summary>
    public long Length => _offset;

    /// <summary>Bytes of pages saved (before compression).</summary>
    public ulong PageBytes => _pageBytes;

    /// <summary>Bytes the page records take in the file, payloads only.</summary>
    public ulong StoredBytes => _storedBytes;

    /// <summary>
    /// The size of an image with <paramref name="vmas"/> VMAs and page records of the given stored
    /// lengths (for a packed image without a codec: the page bytes plus the tag when encrypted).
    /// </summary>
    public static long SizeFor(int vmas, IEnumerable<int> storedLengths, int pageSize, bool packed, int? keptRanges = null)
    {
        long end = ImageFormat.FileHeaderSize + ImageFormat.RecordHeaderSize + (long)vmas * ImageFormat.VmaEntrySize;
        long records = 0;
        foreach (int length in storedLengths)
        {
            end = ImageFormat.NextRecord(end, pageSize, packed) + ImageFormat.RecordHeaderSize + length;
            records++;
        }
        return end + ImageFormat.RecordHeaderSize + records * ImageFormat.IndexEntrySize
            + (keptRanges is { } k ? ImageFormat.RecordHeaderSize + (long)k * ImageFormat.KeptEntrySize : 0)
            + ImageFormat.RecordHeaderSize + ImageFormat.EndPayloadSize;
    }

    public static ulong Checksum(ReadOnlySpan<byte> payload, ulong imageId) => ImageFormat.Hash(payload, imageId);

    public void WriteVmaTable(IReadOnlyList<ImageVma> vmas) => Append(RecordType.VmaTable, (vmas as VmaTable ?? new VmaTable(vmas)).Bytes);

    /// <summary>Appends one plain page record; returns the file offset of its header.</summary>
    public long AppendPages(ulong address, ReadOnlyMemory<byte> payload, ulong payloadChecksum)
    {
        var slot = ReservePages(address, payload.Length);
        WritePages(slot, payload, payloadChecksum);
        return slot.HeaderOffset;
    }

    /// <summary>
    /// Gives the next plain page record its place in the file, its number and its index entry. Call
    /// in address order from one thread; the record may then be written by any thread with
    /// <see cref="WritePages"/>, concurrently with others.
    /// </summary>
    public PageSlot ReservePages(ulong address, int length)
    {
        CheckOpen();
        if (Header.Packed)
            throw new InvalidOperationException("a packed image takes encoded records (AppendRecord)");
        if (length <= 0 || length % Header.PageSize != 0)
            throw new ArgumentException($"page record of {length} bytes is not a whole number of pages", nameof(length));
        long headerAt = ImageFormat.NextPageRecord(_offset, Header.PageSize);
        var slot = new PageSlot(headerAt, _sequence++, address, length);
        _offset = headerAt + ImageFormat.RecordHeaderSize + length;
        // Writer threads fill in earlier records' checksums meanwhile: an Add that grows the list
        // must not race with them (their write would land in the old array and be lost).
        lock (_index)
            _index.Add(new IndexEntry(address, length, length, headerAt));
        _pageBytes += (ulong)length;
        _storedBytes += (ulong)length;
        return slot;
    }

    /// <summary>Writes a reserved page record: a page of zero padding ending in its header, then the payload.</summary>
    public void WritePages(in PageSlot slot, ReadOnlyMemory<byte> payload, ulong payloadChecksum)
    {
        if (payload.Length != slot.Length)
            throw new ArgumentException($"payload of {payload.Length} bytes for a record of {slot.Length}", nameof(payload));
        int pageSize = Header.PageSize;
        int record = (int)slot.Sequence - 1;
        lock (_index)
            _index[record] = _index[record] with { ContentChecksum = payloadChecksum };
        if (!_blocks.TryTake(out var block))
            block = new AlignedBuffer(pageSize, pageSize);
        try
        {
            var span = block.GetSpan();
            span.Clear();
            RecordHeader.Plain(RecordType.Pages, slot.Address, payload.Length, slot.Sequence, payloadChecksum)
                .Write(span[(pageSize - ImageFormat.RecordHeaderSize)..], Header.ImageId);
            // Both the padding page and the payload are page-aligned: fit for O_DIRECT.
            RandomAccess.Write(_pages, [block.Memory, payload], slot.HeaderOffset + ImageFormat.RecordHeaderSize - pageSize);
        }
        finally
        {
            _blocks.Add(block);
        }
    }

    /// <summary>The number the next page record gets (records are numbered in file order from 1).</summary>
    public ulong NextSequence => _sequence;

    /// <summary>Appends an encoded page record to a packed image, in order (its number must be <see cref="NextSequence"/>).</summary>
    public void AppendRecord(in RecordHeader header, ReadOnlySpan<byte> stored)
    {
        CheckOpen();
        if (!Header.Packed)
            throw new InvalidOperationException("a plain image takes page records through ReservePages/WritePages");
        if (header.Sequence != _sequence || header.StoredLength != stored.Length || header.Type != RecordType.Pages)
            throw new ArgumentException($"record {header.Sequence} ({header.StoredLength} bytes) where record {_sequence} belongs", nameof(header));
        lock (_index)
            _index.Add(new IndexEntry(header.Address, header.OriginalLength, header.StoredLength, _offset, header.ContentChecksum));
        Span<byte> head = stackalloc byte[ImageFormat.RecordHeaderSize];
        header.Write(head, Header.ImageId);
        Stage(head);
        Stage(stored);
        _offset += head.Length + stored.Length;
        _sequence++;
        _pageBytes += (ulong)header.OriginalLength;
        _storedBytes += (ulong)header.StoredLength;
    }

    /// <summary>
    /// Writes the index, the kept ranges of an incremental image (sorted, disjoint, whole pages)
    /// and the end record. The image is complete only after this.
    /// </summary>
    public void Finish(IReadOnlyList<KeptRange>? kept = null)
    {
        if (_finished)
            return;
        if (Header.Incremental != kept is not null)
            throw new ArgumentException(Header.Incremental ? "an incremental image needs its kept ranges" : "only an incremental image has kept ranges", nameof(kept));
        var index = new byte[_index.Count * ImageFormat.IndexEntrySize];
        for (int i = 0; i < _index.Count; i++)
            _index[i].Write(index.AsSpan(i * ImageFormat.IndexEntrySize));
        long indexAt = Append(RecordType.Index, index);
        kept ??= [];
        if (Header.Incremental)
        {
            var ranges = new byte[kept.Count * ImageFormat.KeptEntrySize];
            for (int i = 0; i < kept.Count; i++)
                kept[i].Write(ranges.AsSpan(i * ImageFormat.KeptEntrySize));
            Append(RecordType.Kept, ranges);
        }
        var end = new byte[ImageFormat.EndPayloadSize];
        BinaryPrimitives.WriteInt64LittleEndian(end, indexAt);
        BinaryPrimitives.WriteInt64LittleEndian(end.AsSpan(8), _index.Count);
        BinaryPrimitives.WriteUInt64LittleEndian(end.AsSpan(16), _pageBytes);
        BinaryPrimitives.WriteUInt64LittleEndian(end.AsSpan(24), _sequence + 1);
        BinaryPrimitives.WriteUInt64LittleEndian(end.AsSpan(32), _storedBytes);
        if (Header.HasDigest)
            ImageFormat.Digest(_index, kept, end.AsSpan(40, ImageFormat.DigestSize));
        Append(RecordType.End, end);
        if (_staging is not null)
            FlushStaging(last: true);
        _finished = true;
    }

    private long Append(RecordType type, ReadOnlySpan<byte> payload)
    {
        CheckOpen();
        Span<byte> head = stackalloc byte[ImageFormat.RecordHeaderSize];
        RecordHeader.Plain(type, 0, payload.Length, _sequence++, Checksum(payload, Header.ImageId)).Write(head, Header.ImageId);
        long at = _offset;
        if (_staging is not null)
        {
            Stage(head);
            Stage(payload);
        }
        else
        {
            RandomAccess.Write(_file, head, at);
            RandomAccess.Write(_file, payload, at + head.Length);
        }
        _offset += head.Length + payload.Length;
        return at;
    }

    private void Stage(ReadOnlySpan<byte> data)
    {
        var buffer = _staging!.GetSpan();
        while (!data.IsEmpty)
        {
            int n = Math.Min(data.Length, buffer.Length - _staged);
            data[..n].CopyTo(buffer[_staged..]);
            _staged += n;
            data = data[n..];
            if (_staged == buffer.Length)
                FlushStaging(last: false);
        }
    }

    private void FlushStaging(bool last)
    {
        int length = _staged;
        if (last && _direct)
        {
            // O_DIRECT writes whole pages: pad the tail with zeros (cut off again by truncation).
            int padded = (int)ImageFormat.AlignUp(length, Header.PageSize);
            _staging!.GetSpan()[length..padded].Clear();
            length = padded;
        }
        if (length > 0)
            RandomAccess.Write(_pages, (ReadOnlySpan<byte>)_staging!.GetSpan()[..length], _stagingStart);
        _stagingStart += _staged;
        _staged = 0;
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
        if (_staging is not null)
            ((IDisposable)_staging).Dispose();
    }
}

/// <summary>A page record's reserved place: header offset, record number, address and length.</summary>
public readonly record struct PageSlot(long HeaderOffset, ulong Sequence, ulong Address, int Length);
