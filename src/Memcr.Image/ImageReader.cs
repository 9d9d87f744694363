using System.Buffers.Binary;
using System.Collections.Concurrent;
using Microsoft.Win32.SafeHandles;

namespace Memcr.Image;

/// <summary>Consecutive page records [First, First + Count) read with one I/O of Length bytes at Start.</summary>
public readonly record struct PageBatch(int First, int Count, long Start, int Length);

/// <summary>
/// Reads an image. <see cref="Open"/> reads and checks the header, end record, index and VMA table
/// (a few small reads). Pages are read in batches of whole records into the caller's buffer with
/// <see cref="ReadBatch"/>, which checks every record header, padding and payload checksum, so
/// nothing unchecked ever reaches the caller. <see cref="Verify"/> does that for the whole image.
/// </summary>
public sealed class ImageReader : IDisposable
{
    private readonly SafeFileHandle _file;
    private readonly SafeFileHandle _pages;
    private readonly long _indexOffset;
    private readonly long _vmaTableEnd;

    private ImageReader(string path, SafeFileHandle file, SafeFileHandle? pageFile)
    {
        Path = path;
        _file = file;
        _pages = pageFile ?? file;
        try
        {
            Length = RandomAccess.GetLength(file);
            var head = new byte[(int)Math.Min(Length, ImageFormat.FileHeaderSize)];
            ReadExact(head, 0);
            Header = ImageHeader.Read(head, path);
            if (Header.PageSize < 4096 || (Header.PageSize & (Header.PageSize - 1)) != 0 || Header.PageSize > 1 << 20)
                throw new ImageFormatException(path, 16, $"page size {Header.PageSize} is not a valid page size");
            (_indexOffset, long pageRecords, PageBytes) = ReadEnd();
            (Vmas, _vmaTableEnd) = ReadVmaTable();
            Index = ReadIndex(pageRecords);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    public string Path { get; }

    public ImageHeader Header { get; }

    public IReadOnlyList<ImageVma> Vmas { get; }

    public IReadOnlyList<IndexEntry> Index { get; }

    public ulong PageBytes { get; }

    public long Length { get; }

    /// <summary>
    /// Opens an image. Page batches are read through <paramref name="pageFile"/> when given (for
    /// example an O_DIRECT handle; buffers must then be page-aligned), else through a plain handle.
    /// </summary>
    public static ImageReader Open(string path, SafeFileHandle? pageFile = null)
    {
        var file = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        return new ImageReader(path, file, pageFile);
    }

    private void ReadExact(Span<byte> into, long offset)
    {
        int done = 0;
        while (done < into.Length)
        {
            int n = RandomAccess.Read(_file, into[done..], offset + done);
            if (n == 0)
                throw new ImageFormatException(Path, offset + done, "truncated: unexpected end of file");
            done += n;
        }
    }

    private (RecordHeader Header, byte[] Payload) ReadRecord(long offset, RecordType expected)
    {
        if (offset < ImageFormat.FileHeaderSize || offset > Length - ImageFormat.RecordHeaderSize)
            throw new ImageFormatException(Path, offset, $"truncated: a {expected} record should start here, past the end of the {Length}-byte file");
        var head = new byte[ImageFormat.RecordHeaderSize];
        ReadExact(head, offset);
        var h = RecordHeader.Read(head, Header.ImageId, Path, offset);
        if (h.Type != expected)
            throw new ImageFormatException(Path, offset, $"expected a {expected} record, found {h.Type}");
        long payloadAt = offset + ImageFormat.RecordHeaderSize;
        if (h.StoredLength > Length - payloadAt)
            throw new ImageFormatException(Path, offset, $"truncated: the {h.Type} record needs {h.StoredLength} bytes, the file ends {Length - payloadAt} bytes after its header");
        var payload = new byte[h.StoredLength];
        ReadExact(payload, payloadAt);
        if (!h.PayloadMatches(payload, Header.ImageId))
            throw new ImageFormatException(Path, offset, $"{h.Type} record checksum mismatch");
        return (h, payload);
    }

    private void ExpectSequence(RecordHeader h, ulong expected, long offset)
    {
        if (h.Sequence != expected)
            throw new ImageFormatException(Path, offset, $"record number {h.Sequence} where record {expected} belongs (records reordered or spliced)");
    }

    private (long IndexOffset, long PageRecords, ulong PageBytes) ReadEnd()
    {
        long endAt = Length - ImageFormat.RecordHeaderSize - ImageFormat.EndPayloadSize;
        if (endAt < ImageFormat.FileHeaderSize)
            throw new ImageFormatException(Path, Length, "truncated: no end record (the checkpoint did not finish writing this image)");
        RecordHeader h;
        byte[] payload;
        try
        {
            (h, payload) = ReadRecord(endAt, RecordType.End);
        }
        catch (ImageFormatException e)
        {
            throw new ImageFormatException(Path, e.Offset, $"truncated or damaged: no valid end record at the end of the file ({e.Problem})");
        }
        if (h.StoredLength != ImageFormat.EndPayloadSize)
            throw new ImageFormatException(Path, endAt, "end record has the wrong size");
        long indexAt = BinaryPrimitives.ReadInt64LittleEndian(payload);
        long records = BinaryPrimitives.ReadInt64LittleEndian(payload.AsSpan(8));
        ulong pageBytes = BinaryPrimitives.ReadUInt64LittleEndian(payload.AsSpan(16));
        ulong recordCount = BinaryPrimitives.ReadUInt64LittleEndian(payload.AsSpan(24));
        if (indexAt < ImageFormat.FileHeaderSize || indexAt >= endAt || records < 0 || records > (endAt - indexAt) / ImageFormat.IndexEntrySize)
            throw new ImageFormatException(Path, endAt, "end record points outside the file");
        if (recordCount != (ulong)records + 3)
            throw new ImageFormatException(Path, endAt, $"end record counts {recordCount} records for {records} page records");
        ExpectSequence(h, recordCount - 1, endAt);
        return (indexAt, records, pageBytes);
    }

    private (List<ImageVma> Vmas, long End) ReadVmaTable()
    {
        var (h, payload) = ReadRecord(ImageFormat.FileHeaderSize, RecordType.VmaTable);
        ExpectSequence(h, 0, ImageFormat.FileHeaderSize);
        if (h.StoredLength % ImageFormat.VmaEntrySize != 0)
            throw new ImageFormatException(Path, ImageFormat.FileHeaderSize, "VMA table length is not a whole number of entries");
        var vmas = new List<ImageVma>(h.StoredLength / ImageFormat.VmaEntrySize);
        for (int i = 0; i < h.StoredLength; i += ImageFormat.VmaEntrySize)
            vmas.Add(ImageVma.Read(payload.AsSpan(i)));
        return (vmas, ImageFormat.FileHeaderSize + ImageFormat.RecordHeaderSize + h.StoredLength);
    }

    private List<IndexEntry> ReadIndex(long records)
    {
        var (h, payload) = ReadRecord(_indexOffset, RecordType.Index);
        ExpectSequence(h, (ulong)records + 1, _indexOffset);
        if (h.StoredLength != records * ImageFormat.IndexEntrySize)
            throw new ImageFormatException(Path, _indexOffset, $"index holds {h.StoredLength / ImageFormat.IndexEntrySize} entries, the end record says {records}");
        var index = new List<IndexEntry>((int)records);
        ulong previousEnd = 0;
        long end = _vmaTableEnd;
        ulong total = 0;
        for (int i = 0; i < records; i++)
        {
            var e = payload.AsSpan(i * ImageFormat.IndexEntrySize, ImageFormat.IndexEntrySize);
            var entry = new IndexEntry(BinaryPrimitives.ReadUInt64LittleEndian(e), BinaryPrimitives.ReadInt32LittleEndian(e[8..]), BinaryPrimitives.ReadInt64LittleEndian(e[16..]));
            // Records are laid out back to back, each payload on the next page boundary that leaves
            // room for a page of padding and header: every offset follows from the lengths.
            if (entry.Length <= 0 || entry.Length > ImageFormat.MaxRecordPayload || entry.Length % Header.PageSize != 0
                || entry.Address % (ulong)Header.PageSize != 0 || entry.Address < previousEnd
                || entry.FileOffset != ImageFormat.NextPageRecord(end, Header.PageSize))
            {
                throw new ImageFormatException(Path, _indexOffset + ImageFormat.RecordHeaderSize + i * ImageFormat.IndexEntrySize, $"index entry {i} is invalid");
            }
            previousEnd = entry.End;
            end = entry.FileOffset + ImageFormat.RecordHeaderSize + entry.Length;
            total += (ulong)entry.Length;
            index.Add(entry);
        }
        if (end != _indexOffset)
            throw new ImageFormatException(Path, end, $"the index should follow the last page record at offset {end}, it is at {_indexOffset}");
        if (total != PageBytes)
            throw new ImageFormatException(Path, _indexOffset, $"index covers {total} bytes, the end record says {PageBytes}");
        return index;
    }

    /// <summary>Groups records into batches of at most <paramref name="maxBytes"/> (a larger record goes alone).</summary>
    public List<PageBatch> PlanBatches(int maxBytes)
    {
        var batches = new List<PageBatch>();
        int first = 0;
        while (first < Index.Count)
        {
            long start = BlockStart(Index[first]);
            int count = 1;
            while (first + count < Index.Count && PayloadEnd(Index[first + count]) - start <= maxBytes)
                count++;
            batches.Add(new PageBatch(first, count, start, (int)(PayloadEnd(Index[first + count - 1]) - start)));
            first += count;
        }
        return batches;
    }

    private long BlockStart(in IndexEntry e) => e.FileOffset + ImageFormat.RecordHeaderSize - Header.PageSize;

    private static long PayloadEnd(in IndexEntry e) => e.FileOffset + ImageFormat.RecordHeaderSize + e.Length;

    /// <summary>Offset in a batch buffer of the payload of record <paramref name="record"/>.</summary>
    public int PayloadOffset(in PageBatch batch, int record) =>
        (int)(Index[record].FileOffset + ImageFormat.RecordHeaderSize - batch.Start);

    /// <summary>Reads a batch into <paramref name="buffer"/> and checks every record in it.</summary>
    public void ReadBatch(in PageBatch batch, Memory<byte> buffer)
    {
        var into = buffer[..batch.Length];
        int done = 0;
        while (done < into.Length)
        {
            int n = RandomAccess.Read(_pages, into.Span[done..], batch.Start + done);
            if (n == 0)
                throw new ImageFormatException(Path, batch.Start + done, "truncated: unexpected end of file in page records");
            done += n;
        }
        CheckBatch(batch, into.Span);
    }

    private void CheckBatch(in PageBatch batch, ReadOnlySpan<byte> data)
    {
        for (int i = batch.First; i < batch.First + batch.Count; i++)
        {
            var entry = Index[i];
            int headerAt = (int)(entry.FileOffset - batch.Start);
            // The page in front of each payload: zero padding, then the record header.
            if (data[(headerAt + ImageFormat.RecordHeaderSize - Header.PageSize)..headerAt].ContainsAnyExcept((byte)0))
                throw new ImageFormatException(Path, entry.FileOffset, $"padding before page record {i} is not zero");
            var h = RecordHeader.Read(data.Slice(headerAt, ImageFormat.RecordHeaderSize), Header.ImageId, Path, entry.FileOffset);
            if (h.Type != RecordType.Pages)
                throw new ImageFormatException(Path, entry.FileOffset, $"expected a page record, found {h.Type}");
            ExpectSequence(h, (ulong)i + 1, entry.FileOffset);
            if (h.Address != entry.Address || h.StoredLength != entry.Length)
                throw new ImageFormatException(Path, entry.FileOffset, $"page record {i} is for 0x{h.Address:x}+{h.StoredLength}, the index says 0x{entry.Address:x}+{entry.Length}");
            if (!h.PayloadMatches(data.Slice(headerAt + ImageFormat.RecordHeaderSize, entry.Length), Header.ImageId))
                throw new ImageFormatException(Path, entry.FileOffset, $"checksum mismatch in page record {i} (pages 0x{entry.Address:x}-0x{entry.End:x})");
        }
    }

    /// <summary>Reads the whole image and checks every record, on <paramref name="parallelism"/> threads.</summary>
    public void Verify(int parallelism = 1, int batchBytes = 2 << 20)
    {
        if (Index.Count > 0)
        {
            // The bytes between the VMA table and the first page record's padding page are zero.
            long firstBlock = BlockStart(Index[0]);
            var gap = new byte[firstBlock - _vmaTableEnd];
            ReadExact(gap, _vmaTableEnd);
            if (gap.AsSpan().ContainsAnyExcept((byte)0))
                throw new ImageFormatException(Path, _vmaTableEnd, "padding after the VMA table is not zero");
        }
        var batches = PlanBatches(batchBytes);
        int size = batches.Count == 0 ? 0 : batches.Max(b => b.Length);
        var failures = new ConcurrentBag<ImageFormatException>();
        Parallel.ForEach(
            batches,
            new ParallelOptions { MaxDegreeOfParallelism = Math.Max(1, parallelism) },
            () => new AlignedBuffer(Math.Max(size, 4096), Header.PageSize),
            (batch, state, buffer) =>
            {
                try
                {
                    ReadBatch(batch, buffer.Memory);
                }
                catch (ImageFormatException e)
                {
                    failures.Add(e);
                    state.Stop();
                }
                return buffer;
            },
            buffer => ((IDisposable)buffer).Dispose());
        if (!failures.IsEmpty)
            throw failures.OrderBy(f => f.Offset).First();
    }

    public void Dispose()
    {
        _file.Dispose();
    }
}
