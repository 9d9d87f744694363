using System.Buffers.Binary;
using System.Collections.Concurrent;
using Memcr.Linux.Memory;
using Microsoft.Win32.SafeHandles;

namespace Memcr.Image;

/// <summary>Consecutive page records [First, First + Count) read with one I/O of Length bytes at Start.</summary>
public readonly record struct PageBatch(int First, int Count, long Start, int Length);

/// <summary>
/// Reads an image. <see cref="Open"/> reads and checks the header (and the key of an encrypted
/// image), end record, index, whole-image digest and VMA table (a few small reads): all that can be
/// proven without reading the pages. Records are read in batches into the caller's buffer with
/// <see cref="ReadBatch"/> (or by a <see cref="BatchStream"/>), and <see cref="CheckBatch"/> checks
/// every record header, padding, index entry and payload checksum, so nothing unchecked reaches
/// the caller; <see cref="Decode"/> turns a record's payload into pages (decrypting, decompressing
/// and checking the content checksum). <see cref="Verify"/> checks the whole image.
/// </summary>
public sealed class ImageReader : IDisposable
{
    private readonly SafeFileHandle _file;
    private readonly long _indexOffset;
    private readonly long _vmaTableEnd;
    private readonly ImageCipher? _cipher;

    private ImageReader(string path, SafeFileHandle file, byte[]? key)
    {
        Path = path;
        _file = file;
        try
        {
            Length = RandomAccess.GetLength(file);
            var head = new byte[(int)Math.Min(Length, ImageFormat.FileHeaderSize)];
            ReadExact(head, 0);
            Header = ImageHeader.Read(head, path);
            if (Header.PageSize < 4096 || (Header.PageSize & (Header.PageSize - 1)) != 0 || Header.PageSize > 1 << 20)
                throw new ImageFormatException(path, 16, $"page size {Header.PageSize} is not a valid page size");
            if (Header.Encryption != Encryption.None && key is { } k)
                _cipher = ImageCipher.ForImage(Header, k, path);
            (_indexOffset, long pageRecords) = ReadEnd();
            (Vmas, _vmaTableEnd) = ReadVmaTable();
            Kept = Header.Incremental ? ReadKept(pageRecords) : [];
            Index = ReadIndex(pageRecords);
        }
        catch
        {
            _cipher?.Dispose();
            file.Dispose();
            throw;
        }
    }

    public string Path { get; }

    public ImageHeader Header { get; }

    public IReadOnlyList<ImageVma> Vmas { get; }

    public IReadOnlyList<IndexEntry> Index { get; }

    /// <summary>Incremental images: the ranges whose pages come from the images before this one (sorted, disjoint); else empty.</summary>
    public IReadOnlyList<KeptRange> Kept { get; }

    /// <summary>Bytes of pages the image holds (decoded).</summary>
    public ulong PageBytes { get; private set; }

    /// <summary>Bytes the page payloads take in the file.</summary>
    public ulong StoredBytes { get; private set; }

    /// <summary>The whole-image digest from the end record (images written with -c), else null.</summary>
    public byte[]? Digest { get; private set; }

    public long Length { get; }

    /// <summary>The image is encrypted and the right key was given: payloads can be decrypted.</summary>
    public bool CanDecrypt => _cipher is not null;

    /// <summary>
    /// Opens an image and checks all that can be checked without reading its pages. An encrypted
    /// image needs its <paramref name="key"/> to be decoded; a wrong key is refused here.
    /// </summary>
    public static ImageReader Open(string path, byte[]? key = null)
    {
        var file = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        return new ImageReader(path, file, key);
    }

    /// <summary>
    /// A second handle on the same file (not the same path: the file may have been replaced there
    /// since), reading with O_DIRECT when <paramref name="direct"/> and the file system allows it.
    /// </summary>
    public SafeFileHandle Reopen(bool direct, out bool isDirect)
    {
        string self = $"/proc/self/fd/{_file.DangerousGetHandle()}";
        var handle = direct ? Linux.FileOps.OpenDirect(self, write: false) : null;
        isDirect = handle is not null;
        return handle ?? File.OpenHandle(self, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
    }

    /// <summary>A decoder for one thread.</summary>
    public RecordDecoder CreateDecoder() => new(Path, Header.ImageId, _cipher?.Clone());

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

    private (long IndexOffset, long PageRecords) ReadEnd()
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
        PageBytes = pageBytes;
        StoredBytes = BinaryPrimitives.ReadUInt64LittleEndian(payload.AsSpan(32));
        if (Header.HasDigest)
            Digest = payload.AsSpan(40, ImageFormat.DigestSize).ToArray();
        else if (payload.AsSpan(40).ContainsAnyExcept((byte)0))
            throw new ImageFormatException(Path, endAt, "end record holds a digest the header does not announce");
        if (indexAt < ImageFormat.FileHeaderSize || indexAt >= endAt || records < 0 || records > (endAt - indexAt) / ImageFormat.IndexEntrySize)
            throw new ImageFormatException(Path, endAt, "end record points outside the file");
        if (recordCount != (ulong)records + (Header.Incremental ? 4UL : 3UL))
            throw new ImageFormatException(Path, endAt, $"end record counts {recordCount} records for {records} page records");
        ExpectSequence(h, recordCount - 1, endAt);
        return (indexAt, records);
    }

    private (VmaTable Vmas, long End) ReadVmaTable()
    {
        var (h, payload) = ReadRecord(ImageFormat.FileHeaderSize, RecordType.VmaTable);
        ExpectSequence(h, 0, ImageFormat.FileHeaderSize);
        if (h.StoredLength % ImageFormat.VmaEntrySize != 0)
            throw new ImageFormatException(Path, ImageFormat.FileHeaderSize, "VMA table length is not a whole number of entries");
        return (VmaTable.Over(payload), ImageFormat.FileHeaderSize + ImageFormat.RecordHeaderSize + h.StoredLength);
    }

    /// <summary>The kept record of an incremental image: right after the index, right before the end record.</summary>
    private List<KeptRange> ReadKept(long records)
    {
        var head = new byte[ImageFormat.RecordHeaderSize];
        ReadExact(head, _indexOffset);
        long at = _indexOffset + ImageFormat.RecordHeaderSize + RecordHeader.Read(head, Header.ImageId, Path, _indexOffset).StoredLength;
        var (h, payload) = ReadRecord(at, RecordType.Kept);
        ExpectSequence(h, (ulong)records + 2, at);
        if (at + ImageFormat.RecordHeaderSize + h.StoredLength != Length - ImageFormat.RecordHeaderSize - ImageFormat.EndPayloadSize)
            throw new ImageFormatException(Path, at, "the kept record does not end where the end record starts");
        if (h.StoredLength % ImageFormat.KeptEntrySize != 0)
            throw new ImageFormatException(Path, at, "kept record length is not a whole number of entries");
        var kept = new List<KeptRange>(h.StoredLength / ImageFormat.KeptEntrySize);
        ulong previousEnd = 0, page = (ulong)Header.PageSize;
        for (int i = 0; i < h.StoredLength / ImageFormat.KeptEntrySize; i++)
        {
            var k = KeptRange.Read(payload.AsSpan(i * ImageFormat.KeptEntrySize));
            if (k.Start < previousEnd || k.End <= k.Start || k.Start % page != 0 || k.End % page != 0)
                throw new ImageFormatException(Path, at + ImageFormat.RecordHeaderSize + i * ImageFormat.KeptEntrySize, $"kept range {i} is invalid");
            previousEnd = k.End;
            kept.Add(k);
        }
        return kept;
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
        ulong total = 0, stored = 0;
        bool packed = Header.Packed;
        int overhead = Header.Encryption == Encryption.None ? 0 : ImageFormat.TagSize;
        for (int i = 0; i < records; i++)
        {
            var entry = IndexEntry.Read(payload.AsSpan(i * ImageFormat.IndexEntrySize, ImageFormat.IndexEntrySize));
            // Records are laid out back to back (plain images: each payload on the next page
            // boundary that leaves room for a page of padding and header): every offset follows
            // from the lengths.
            if (entry.Length <= 0 || entry.Length > ImageFormat.MaxRecordPayload || entry.Length % Header.PageSize != 0
                || (packed ? entry.StoredLength < overhead || entry.StoredLength > entry.Length + overhead : entry.StoredLength != entry.Length)
                || entry.Address % (ulong)Header.PageSize != 0 || entry.Address < previousEnd || entry.End < entry.Address
                || entry.FileOffset != ImageFormat.NextRecord(end, Header.PageSize, packed))
            {
                throw new ImageFormatException(Path, _indexOffset + ImageFormat.RecordHeaderSize + i * ImageFormat.IndexEntrySize, $"index entry {i} is invalid");
            }
            previousEnd = entry.End;
            end = entry.FileOffset + ImageFormat.RecordHeaderSize + entry.StoredLength;
            total += (ulong)entry.Length;
            stored += (ulong)entry.StoredLength;
            index.Add(entry);
        }
        if (end != _indexOffset)
            throw new ImageFormatException(Path, end, $"the index should follow the last page record at offset {end}, it is at {_indexOffset}");
        if (total != PageBytes || stored != StoredBytes)
            throw new ImageFormatException(Path, _indexOffset, $"index covers {total} bytes ({stored} stored), the end record says {PageBytes} ({StoredBytes} stored)");
        if (Digest is not null)
        {
            // The index holds every record's content checksum: the digest is proven before any page is read.
            Span<byte> digest = stackalloc byte[ImageFormat.DigestSize];
            ImageFormat.Digest(index, Kept, digest);
            if (!digest.SequenceEqual(Digest))
                throw new ImageFormatException(Path, Length - ImageFormat.EndPayloadSize + 40, "whole-image digest mismatch: the records' content checksums in the index do not match the digest in the end record");
        }
        return index;
    }

    /// <summary>
    /// Groups consecutive records into batches of at most <paramref name="maxBytes"/> bytes in the
    /// file (a larger record goes alone), <paramref name="maxPageBytes"/> bytes of pages and
    /// <paramref name="maxRecords"/> records.
    /// </summary>
    public List<PageBatch> PlanBatches(int maxBytes, int maxPageBytes = 8 << 20, int maxRecords = 1024)
    {
        var batches = new List<PageBatch>();
        int first = 0;
        while (first < Index.Count)
        {
            long start = BlockStart(Index[first]);
            long pages = Index[first].Length;
            int count = 1;
            while (first + count < Index.Count && count < maxRecords
                && PayloadEnd(Index[first + count]) - start <= maxBytes && pages + Index[first + count].Length <= maxPageBytes)
            {
                pages += Index[first + count].Length;
                count++;
            }
            batches.Add(new PageBatch(first, count, start, (int)(PayloadEnd(Index[first + count - 1]) - start)));
            first += count;
        }
        return batches;
    }

    /// <summary>A batch of <paramref name="count"/> records from <paramref name="record"/> on (one after the other in the file), to read them on their own.</summary>
    public PageBatch RecordBatch(int record, int count = 1)
    {
        long start = BlockStart(Index[record]);
        return new PageBatch(record, count, start, (int)(PayloadEnd(Index[record + count - 1]) - start));
    }

    private long BlockStart(in IndexEntry e) => Header.Packed ? e.FileOffset : e.FileOffset + ImageFormat.RecordHeaderSize - Header.PageSize;

    private static long PayloadEnd(in IndexEntry e) => e.FileOffset + ImageFormat.RecordHeaderSize + e.StoredLength;

    /// <summary>Offset in a batch buffer of the payload of record <paramref name="record"/>.</summary>
    public int PayloadOffset(in PageBatch batch, int record) =>
        (int)(Index[record].FileOffset + ImageFormat.RecordHeaderSize - batch.Start);

    /// <summary>
    /// Reads a batch into <paramref name="buffer"/> and checks every record in it (header, number,
    /// padding, payload checksum); returns the records' headers.
    /// </summary>
    public RecordHeader[] ReadBatch(in PageBatch batch, Memory<byte> buffer)
    {
        var into = buffer.Span[..batch.Length];
        BatchStream.ReadFully(_file, into, batch.Start, batch.Start + batch.Length, 1, Path);
        return CheckBatch(batch, into);
    }

    /// <summary>
    /// Reads a batch through <paramref name="file"/>, a handle from <see cref="Reopen"/>
    /// (<paramref name="align"/>: the page size if it reads with O_DIRECT, else 1), into
    /// <paramref name="buffer"/>, which must hold the batch widened to whole blocks; returns where
    /// in it the batch starts. Nothing is checked yet (<see cref="CheckBatch"/>).
    /// </summary>
    public int ReadBatchThrough(SafeFileHandle file, int align, in PageBatch batch, Span<byte> buffer)
    {
        long start = batch.Start / align * align;
        long end = ImageFormat.AlignUp(batch.Start + batch.Length, align);
        BatchStream.ReadFully(file, buffer[..(int)(end - start)], start, batch.Start + batch.Length, align, Path);
        return (int)(batch.Start - start);
    }

    /// <summary>
    /// Checks every record of a batch whose bytes, from <see cref="PageBatch.Start"/>, are in
    /// <paramref name="data"/>: header, number, padding, agreement with the index, payload checksum.
    /// Returns the records' headers.
    /// </summary>
    public RecordHeader[] CheckBatch(in PageBatch batch, ReadOnlySpan<byte> data)
    {
        var headers = new RecordHeader[batch.Count];
        for (int i = batch.First; i < batch.First + batch.Count; i++)
        {
            var entry = Index[i];
            int headerAt = (int)(entry.FileOffset - batch.Start);
            // Plain images: the page in front of each payload is zero padding, then the record header.
            if (!Header.Packed && data[(headerAt + ImageFormat.RecordHeaderSize - Header.PageSize)..headerAt].ContainsAnyExcept((byte)0))
                throw new ImageFormatException(Path, entry.FileOffset, $"padding before page record {i} is not zero");
            var h = RecordHeader.Read(data.Slice(headerAt, ImageFormat.RecordHeaderSize), Header.ImageId, Path, entry.FileOffset);
            if (h.Type != RecordType.Pages)
                throw new ImageFormatException(Path, entry.FileOffset, $"expected a page record, found {h.Type}");
            ExpectSequence(h, (ulong)i + 1, entry.FileOffset);
            if (h.Address != entry.Address || h.OriginalLength != entry.Length || h.StoredLength != entry.StoredLength)
                throw new ImageFormatException(Path, entry.FileOffset, $"page record {i} is for 0x{h.Address:x}+{h.OriginalLength} ({h.StoredLength} stored), the index says 0x{entry.Address:x}+{entry.Length} ({entry.StoredLength} stored)");
            if (h.ContentChecksum != entry.ContentChecksum)
                throw new ImageFormatException(Path, entry.FileOffset, $"page record {i} (pages 0x{entry.Address:x}-0x{entry.End:x}) has content checksum {h.ContentChecksum:x16}, the index says {entry.ContentChecksum:x16}");
            if (h.Encryption != Header.Encryption || (h.Codec is Codec.Lz4 or Codec.Zstd && h.Codec != Header.Codec) || (!Header.Packed && !h.IsPlain))
                throw new ImageFormatException(Path, entry.FileOffset, $"page record {i} is stored with {h.Codec}/{ImageCipher.Name(h.Encryption)}, which the header does not announce");
            if (!h.PayloadMatches(data.Slice(headerAt + ImageFormat.RecordHeaderSize, entry.StoredLength), Header.ImageId))
                throw new ImageFormatException(Path, entry.FileOffset, $"checksum mismatch in page record {i} (pages 0x{entry.Address:x}-0x{entry.End:x})");
            headers[i - batch.First] = h;
        }
        return headers;
    }

    /// <summary>
    /// Decodes record <paramref name="record"/> of a batch read with <see cref="ReadBatch"/> into
    /// <paramref name="pages"/> (its original length), checking it on the way.
    /// </summary>
    public void Decode(in PageBatch batch, ReadOnlySpan<byte> data, RecordHeader[] headers, int record, RecordDecoder decoder, Span<byte> pages)
    {
        var h = headers[record - batch.First];
        decoder.Decode(h, Index[record].FileOffset, data.Slice(PayloadOffset(batch, record), h.StoredLength), pages);
    }

    /// <summary>
    /// Reads the whole image on <paramref name="parallelism"/> threads and checks every record's
    /// header, number, index entry and payload checksum. With <paramref name="decode"/>
    /// every record is also decrypted, decompressed and checked against its content checksum (an
    /// encrypted image then needs its key).
    /// </summary>
    public void Verify(int parallelism = 1, int batchBytes = 2 << 20, bool decode = false)
    {
        if (decode && Header.Encryption != Encryption.None && _cipher is null)
            throw new ImageFormatException(Path, 23, $"the image is encrypted ({ImageCipher.Name(Header.Encryption)}): its pages cannot be checked without the key");
        if (Index.Count > 0 && !Header.Packed)
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
        int pageBytes = Index.Count == 0 ? 0 : batches.Max(b => Enumerable.Range(b.First, b.Count).Max(i => Index[i].Length));
        var failures = new ConcurrentBag<ImageFormatException>();
        Parallel.ForEach(
            batches,
            new ParallelOptions { MaxDegreeOfParallelism = Math.Max(1, parallelism) },
            () => (Buffer: new AlignedBuffer(Math.Max(size, 4096), Header.PageSize), Pages: decode ? new byte[pageBytes] : [], Decoder: decode ? CreateDecoder() : null),
            (batch, state, local) =>
            {
                try
                {
                    var headers = ReadBatch(batch, local.Buffer.Memory);
                    for (int i = 0; i < batch.Count && local.Decoder is not null; i++)
                        Decode(batch, local.Buffer.GetSpan(), headers, batch.First + i, local.Decoder, local.Pages.AsSpan(0, headers[i].OriginalLength));
                }
                catch (ImageFormatException e)
                {
                    failures.Add(e);
                    state.Stop();
                }
                return local;
            },
            local =>
            {
                ((IDisposable)local.Buffer).Dispose();
                local.Decoder?.Dispose();
            });
        if (!failures.IsEmpty)
            throw failures.OrderBy(f => f.Offset).First();
    }

    public void Dispose()
    {
        _cipher?.Dispose();
        _file.Dispose();
    }
}
