using System.Buffers.Binary;
using System.IO.MemoryMappedFiles;

namespace Memcr.Image;

/// <summary>
/// Reads an image through a read-only mapping of the file. <see cref="Open"/> checks the header,
/// end record, index and VMA table; <see cref="Verify"/> walks every record and checks every
/// checksum. Page payloads are then served straight from the mapping without copying.
/// </summary>
public sealed unsafe class ImageReader : IDisposable
{
    private readonly MemoryMappedFile? _map;
    private readonly MemoryMappedViewAccessor? _view;
    private readonly byte* _base;
    private readonly long _length;
    private readonly long _indexOffset;
    private readonly ulong _recordCount;
    private bool _disposed;

    private ImageReader(string path, MemoryMappedFile? map, MemoryMappedViewAccessor? view, byte* basePtr, long length)
    {
        Path = path;
        _map = map;
        _view = view;
        _base = basePtr;
        _length = length;
        try
        {
            Header = ImageHeader.Read(Span(0, (int)Math.Min(_length, ImageFormat.FileHeaderSize)), path);
            (_indexOffset, long pageRecords, PageBytes, _recordCount) = ReadEnd();
            Index = ReadIndex(pageRecords);
            Vmas = ReadVmaTable();
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    public string Path { get; }

    public ImageHeader Header { get; }

    public IReadOnlyList<ImageVma> Vmas { get; }

    public IReadOnlyList<IndexEntry> Index { get; }

    public ulong PageBytes { get; }

    public long Length => _length;

    public static ImageReader Open(string path)
    {
        long length = new FileInfo(path).Length;
        if (length < ImageFormat.FileHeaderSize)
        {
            throw new ImageFormatException(path, length,
                $"truncated: {length} bytes, shorter than the {ImageFormat.FileHeaderSize}-byte header");
        }
        var map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        MemoryMappedViewAccessor? view = null;
        try
        {
            view = map.CreateViewAccessor(0, length, MemoryMappedFileAccess.Read);
            byte* p = null;
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
            return new ImageReader(path, map, view, p + view.PointerOffset, length);
        }
        catch
        {
            view?.Dispose();
            map.Dispose();
            throw;
        }
    }

    private ReadOnlySpan<byte> Span(long offset, int length) => new(_base + offset, length);

    /// <summary>Address of a page record's payload inside the mapping.</summary>
    public nint PayloadPointer(in IndexEntry entry) => (nint)(_base + entry.FileOffset + ImageFormat.RecordHeaderSize);

    public ReadOnlySpan<byte> Payload(in IndexEntry entry) => Span(entry.FileOffset + ImageFormat.RecordHeaderSize, entry.Length);

    private (RecordHeader Header, long PayloadAt) RecordAt(long offset, RecordType expected)
    {
        if (offset < ImageFormat.FileHeaderSize || offset > _length - ImageFormat.RecordHeaderSize)
            throw new ImageFormatException(Path, offset, $"truncated: a {expected} record should start here, past the end of the {_length}-byte file");
        var h = RecordHeader.Read(Span(offset, ImageFormat.RecordHeaderSize), Header.ImageId, Path, offset);
        if (h.Type != expected)
            throw new ImageFormatException(Path, offset, $"expected a {expected} record, found {h.Type}");
        long payloadAt = offset + ImageFormat.RecordHeaderSize;
        if (h.StoredLength > _length - payloadAt)
            throw new ImageFormatException(Path, offset, $"truncated: the {h.Type} record needs {h.StoredLength} bytes, the file ends {_length - payloadAt} bytes after its header");
        return (h, payloadAt);
    }

    private (long IndexOffset, long PageRecords, ulong PageBytes, ulong Records) ReadEnd()
    {
        long endAt = _length - ImageFormat.RecordHeaderSize - ImageFormat.EndPayloadSize;
        if (endAt < ImageFormat.FileHeaderSize)
            throw new ImageFormatException(Path, _length, "truncated: no end record (the checkpoint did not finish writing this image)");
        RecordHeader h;
        long payloadAt;
        try
        {
            (h, payloadAt) = RecordAt(endAt, RecordType.End);
        }
        catch (ImageFormatException e)
        {
            throw new ImageFormatException(Path, e.Offset, $"truncated or damaged: no valid end record at the end of the file ({e.Problem})");
        }
        var payload = Span(payloadAt, h.StoredLength);
        if (h.StoredLength != ImageFormat.EndPayloadSize || !h.PayloadMatches(payload, Header.ImageId))
            throw new ImageFormatException(Path, endAt, "end record checksum mismatch");
        long indexAt = BinaryPrimitives.ReadInt64LittleEndian(payload);
        long records = BinaryPrimitives.ReadInt64LittleEndian(payload[8..]);
        ulong pageBytes = BinaryPrimitives.ReadUInt64LittleEndian(payload[16..]);
        ulong recordCount = BinaryPrimitives.ReadUInt64LittleEndian(payload[24..]);
        if (indexAt < ImageFormat.FileHeaderSize || indexAt >= endAt || records < 0 || records > (endAt - indexAt) / ImageFormat.IndexEntrySize)
            throw new ImageFormatException(Path, endAt, "end record points outside the file");
        return (indexAt, records, pageBytes, recordCount);
    }

    private List<IndexEntry> ReadIndex(long records)
    {
        var (h, payloadAt) = RecordAt(_indexOffset, RecordType.Index);
        var payload = Span(payloadAt, h.StoredLength);
        if (!h.PayloadMatches(payload, Header.ImageId))
            throw new ImageFormatException(Path, _indexOffset, "index checksum mismatch");
        if (h.StoredLength != records * ImageFormat.IndexEntrySize)
            throw new ImageFormatException(Path, _indexOffset, $"index holds {h.StoredLength / ImageFormat.IndexEntrySize} entries, the end record says {records}");
        var index = new List<IndexEntry>((int)records);
        ulong previousEnd = 0;
        long previousOffset = 0;
        ulong total = 0;
        for (int i = 0; i < records; i++)
        {
            var e = payload.Slice(i * ImageFormat.IndexEntrySize, ImageFormat.IndexEntrySize);
            var entry = new IndexEntry(BinaryPrimitives.ReadUInt64LittleEndian(e), BinaryPrimitives.ReadInt32LittleEndian(e[8..]), BinaryPrimitives.ReadInt64LittleEndian(e[16..]));
            if (entry.Length <= 0 || entry.Length % Header.PageSize != 0 || entry.Address % (ulong)Header.PageSize != 0
                || entry.Address < previousEnd || entry.FileOffset <= previousOffset || entry.FileOffset + ImageFormat.RecordHeaderSize + entry.Length > _indexOffset)
            {
                throw new ImageFormatException(Path, payloadAt + i * ImageFormat.IndexEntrySize, $"index entry {i} is invalid");
            }
            previousEnd = entry.End;
            previousOffset = entry.FileOffset;
            total += (ulong)entry.Length;
            index.Add(entry);
        }
        if (total != PageBytes)
            throw new ImageFormatException(Path, _indexOffset, $"index covers {total} bytes, the end record says {PageBytes}");
        return index;
    }

    private List<ImageVma> ReadVmaTable()
    {
        var (h, payloadAt) = RecordAt(ImageFormat.FileHeaderSize, RecordType.VmaTable);
        var payload = Span(payloadAt, h.StoredLength);
        if (!h.PayloadMatches(payload, Header.ImageId))
            throw new ImageFormatException(Path, ImageFormat.FileHeaderSize, "VMA table checksum mismatch");
        if (h.StoredLength % ImageFormat.VmaEntrySize != 0)
            throw new ImageFormatException(Path, ImageFormat.FileHeaderSize, "VMA table length is not a whole number of entries");
        var vmas = new List<ImageVma>(h.StoredLength / ImageFormat.VmaEntrySize);
        for (int i = 0; i < h.StoredLength; i += ImageFormat.VmaEntrySize)
            vmas.Add(ImageVma.Read(payload[i..]));
        return vmas;
    }

    /// <summary>
    /// Walks every record from the first to the end record and checks its header, its place in the
    /// sequence, that it is the one the index names, and the checksum of its payload. Page records
    /// are checked on <paramref name="parallelism"/> threads. Throws on the first problem found.
    /// </summary>
    public void Verify(int parallelism = 1)
    {
        // Structure first (cheap, sequential): every record where the previous one ends.
        long offset = ImageFormat.FileHeaderSize;
        var (vh, vAt) = RecordAt(offset, RecordType.VmaTable);
        ExpectSequence(vh, 0, offset);
        offset = vAt + vh.StoredLength;
        for (int i = 0; i < Index.Count; i++)
        {
            var entry = Index[i];
            if (entry.FileOffset != offset)
                throw new ImageFormatException(Path, offset, $"page record {i} should start here, the index says {entry.FileOffset}");
            var (h, at) = RecordAt(offset, RecordType.Pages);
            ExpectSequence(h, (ulong)i + 1, offset);
            if (h.Address != entry.Address || h.StoredLength != entry.Length)
                throw new ImageFormatException(Path, offset, $"page record {i} is for 0x{h.Address:x}+{h.StoredLength}, the index says 0x{entry.Address:x}+{entry.Length}");
            offset = at + h.StoredLength;
        }
        if (offset != _indexOffset)
            throw new ImageFormatException(Path, offset, "unexpected data between the last page record and the index");
        var (ih, _) = RecordAt(_indexOffset, RecordType.Index);
        ExpectSequence(ih, (ulong)Index.Count + 1, _indexOffset);
        if (_recordCount != (ulong)Index.Count + 3)
            throw new ImageFormatException(Path, _indexOffset, $"end record counts {_recordCount} records, found {Index.Count + 3}");

        // Then the payload checksums, in parallel.
        var failures = new System.Collections.Concurrent.ConcurrentBag<ImageFormatException>();
        Parallel.For(0, Index.Count, new ParallelOptions { MaxDegreeOfParallelism = Math.Max(1, parallelism) }, (i, state) =>
        {
            var entry = Index[i];
            var h = RecordHeader.Read(Span(entry.FileOffset, ImageFormat.RecordHeaderSize), Header.ImageId, Path, entry.FileOffset);
            if (!h.PayloadMatches(Payload(entry), Header.ImageId))
            {
                failures.Add(new ImageFormatException(Path, entry.FileOffset,
                    $"checksum mismatch in page record {i} (pages 0x{entry.Address:x}-0x{entry.End:x})"));
                state.Stop();
            }
        });
        if (!failures.IsEmpty)
            throw failures.OrderBy(f => f.Offset).First();
    }

    private void ExpectSequence(RecordHeader h, ulong expected, long offset)
    {
        if (h.Sequence != expected)
            throw new ImageFormatException(Path, offset, $"record number {h.Sequence} where record {expected} belongs (records reordered or spliced)");
    }

    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        if (_view is not null)
        {
            _view.SafeMemoryMappedViewHandle.ReleasePointer();
            _view.Dispose();
        }
        _map?.Dispose();
    }
}
