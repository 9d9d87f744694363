using System.Buffers.Binary;
using System.IO.Hashing;

namespace Memcr.Image;

/// <summary>Constants and layouts of image format v3 (docs/image-format.md). All integers little-endian.</summary>
public static class ImageFormat
{
    public const int Version = 3;
    public const int FileHeaderSize = 128;
    public const int RecordHeaderSize = 64;
    public const int VmaEntrySize = 40;
    public const int IndexEntrySize = 32;
    public const int EndPayloadSize = 72;
    public const int DigestSize = 32;
    public const int KeptEntrySize = 16;
    public const int KeySaltSize = 16;
    public const int KeyCheckSize = 16;

    /// <summary>Bytes an encrypted payload has beyond its plaintext: the AES-GCM tag.</summary>
    public const int TagSize = 16;

    /// <summary>Largest payload of one record: readers refuse anything bigger before allocating.</summary>
    public const int MaxRecordPayload = 64 << 20;

    public static ReadOnlySpan<byte> Magic => "MEMCRIMG"u8;

    public static ReadOnlySpan<byte> RecordMagic => "MREC"u8;

    internal static ulong Hash(ReadOnlySpan<byte> data, ulong imageId) => XxHash3.HashToUInt64(data, (long)imageId);

    public static long AlignUp(long value, int alignment) => (value + alignment - 1) / alignment * alignment;

    /// <summary>
    /// Where the next page record's header goes when the previous record ends at <paramref name="end"/>:
    /// its payload starts on the first page boundary that leaves a whole page for padding and header.
    /// </summary>
    internal static long NextPageRecord(long end, int pageSize) => AlignUp(end, pageSize) + pageSize - RecordHeaderSize;

    /// <summary>
    /// The whole-image digest (memcr -c): SHA-256 over every page record's address (8 bytes),
    /// original length (4) and content checksum (8), little-endian, in file order. The content
    /// checksums are in the index, so the digest is checked before any page is read; each record
    /// is then checked against its index entry and its decoded pages against the content checksum,
    /// so the digest covers the pages.
    /// </summary>
    internal static void Digest(IReadOnlyList<IndexEntry> index, IReadOnlyList<KeptRange> kept, Span<byte> digest)
    {
        using var sha = System.Security.Cryptography.IncrementalHash.CreateHash(System.Security.Cryptography.HashAlgorithmName.SHA256);
        Span<byte> entry = stackalloc byte[20];
        for (int i = 0; i < index.Count; i++)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(entry, index[i].Address);
            BinaryPrimitives.WriteInt32LittleEndian(entry[8..], index[i].Length);
            BinaryPrimitives.WriteUInt64LittleEndian(entry[12..], index[i].ContentChecksum);
            sha.AppendData(entry);
        }
        // An incremental image's kept ranges decide which pages come from older images: covered too.
        Span<byte> range = stackalloc byte[KeptEntrySize];
        foreach (var k in kept)
        {
            k.Write(range);
            sha.AppendData(range);
        }
        sha.GetHashAndReset(digest);
    }

    /// <summary>Where the record after one ending at <paramref name="end"/> starts, in either layout.</summary>
    internal static long NextRecord(long end, int pageSize, bool packed) => packed ? end : NextPageRecord(end, pageSize);
}

public enum RecordType : byte
{
    VmaTable = 1,
    Pages = 2,
    Index = 3,
    End = 4,

    /// <summary>Incremental images: the address ranges whose pages come from the older images.</summary>
    Kept = 5,
}

public enum Codec : byte
{
    None = 0,

    /// <summary>LZ4 block format (no frame); the original length is in the record header.</summary>
    Lz4 = 1,

    /// <summary>One zstd frame.</summary>
    Zstd = 2,

    /// <summary>Every byte is zero: nothing is stored.</summary>
    Zero = 3,
}

public enum ChecksumKind : byte
{
    XxHash3 = 1,
}

/// <summary>Authenticated encryption of record payloads (payload = ciphertext, then a 16-byte tag).</summary>
public enum Encryption : byte
{
    None = 0,
    Aes128Gcm = 1,
    Aes192Gcm = 2,
    Aes256Gcm = 3,
}

[Flags]
public enum ImageFlags : uint
{
    None = 0,

    /// <summary>Written pages of private file mappings are included (memcr -f).</summary>
    FilePages = 1,

    /// <summary>The end record holds a whole-image digest (memcr -c).</summary>
    Digest = 2,

    /// <summary>Records follow one another with no padding (compressed or encrypted images).</summary>
    Packed = 4,

    /// <summary>
    /// The image holds only the pages written since the image it refers to (its parent, named by
    /// <see cref="ImageHeader.ParentId"/>); its kept record says which pages come from there.
    /// </summary>
    Incremental = 8,
}

public enum VmaKind : ushort
{
    Anonymous = 1,
    Heap = 2,
    Stack = 3,
    File = 4,
}

/// <summary>The file header: what the image is of, and how its records are stored.</summary>
public sealed record ImageHeader(int Pid, int PageSize, ushort Architecture, ImageFlags Flags, ulong ImageId, DateTimeOffset Created)
{
    /// <summary>The codec memcr was asked for; each record names the one it really uses.</summary>
    public Codec Codec { get; init; }

    public Encryption Encryption { get; init; }

    /// <summary>Random salt of the per-image key (encrypted images), else zeros.</summary>
    public ReadOnlyMemory<byte> KeySalt { get; init; } = new byte[ImageFormat.KeySaltSize];

    /// <summary>Proof of the key (encrypted images): HMAC-SHA256 of header bytes 0..63 under the image key.</summary>
    public ReadOnlyMemory<byte> KeyCheck { get; init; } = new byte[ImageFormat.KeyCheckSize];

    public bool Packed => (Flags & ImageFlags.Packed) != 0;

    public bool HasDigest => (Flags & ImageFlags.Digest) != 0;

    public bool Incremental => (Flags & ImageFlags.Incremental) != 0;

    /// <summary>Incremental images: the image id of the image this one refers to, else 0.</summary>
    public ulong ParentId { get; init; }

    /// <summary>Incremental images: how many images come before this one in its chain (1 for the first increment over a full image), else 0.</summary>
    public int ChainDepth { get; init; }

    public void Write(Span<byte> dest)
    {
        dest[..ImageFormat.FileHeaderSize].Clear();
        ImageFormat.Magic.CopyTo(dest);
        BinaryPrimitives.WriteUInt16LittleEndian(dest[8..], ImageFormat.Version);
        BinaryPrimitives.WriteUInt16LittleEndian(dest[10..], ImageFormat.FileHeaderSize);
        BinaryPrimitives.WriteUInt32LittleEndian(dest[12..], (uint)Flags);
        BinaryPrimitives.WriteUInt32LittleEndian(dest[16..], (uint)PageSize);
        BinaryPrimitives.WriteUInt16LittleEndian(dest[20..], Architecture);
        dest[22] = (byte)Codec;
        dest[23] = (byte)Encryption;
        BinaryPrimitives.WriteInt32LittleEndian(dest[24..], Pid);
        BinaryPrimitives.WriteInt64LittleEndian(dest[32..], Created.ToUnixTimeMilliseconds());
        BinaryPrimitives.WriteUInt64LittleEndian(dest[40..], ImageId);
        KeySalt.Span.CopyTo(dest[48..]);
        KeyCheck.Span.CopyTo(dest[64..]);
        BinaryPrimitives.WriteUInt64LittleEndian(dest[80..], ParentId);
        BinaryPrimitives.WriteInt32LittleEndian(dest[88..], ChainDepth);
        BinaryPrimitives.WriteUInt64LittleEndian(dest[120..], ImageFormat.Hash(dest[..120], 0));
    }

    public static ImageHeader Read(ReadOnlySpan<byte> src, string path)
    {
        if (src.Length < 10)
            throw new ImageFormatException(path, 0, $"truncated: {src.Length} bytes, shorter than the {ImageFormat.FileHeaderSize}-byte header");
        if (!src[..8].SequenceEqual(ImageFormat.Magic))
            throw new ImageFormatException(path, 0, "not a memcr image (bad magic)");
        int version = BinaryPrimitives.ReadUInt16LittleEndian(src[8..]);
        if (version != ImageFormat.Version)
        {
            string which = version > ImageFormat.Version ? "newer" : "older";
            throw new ImageFormatException(path, 8, $"format version {version} is not supported: the image is from a {which} memcr (this one reads version {ImageFormat.Version})");
        }
        if (src.Length < ImageFormat.FileHeaderSize)
            throw new ImageFormatException(path, 0, $"truncated: {src.Length} bytes, shorter than the {ImageFormat.FileHeaderSize}-byte header");
        if (BinaryPrimitives.ReadUInt64LittleEndian(src[120..]) != ImageFormat.Hash(src[..120], 0))
            throw new ImageFormatException(path, 120, "header checksum mismatch");
        int headerSize = BinaryPrimitives.ReadUInt16LittleEndian(src[10..]);
        if (headerSize != ImageFormat.FileHeaderSize)
            throw new ImageFormatException(path, 10, $"header size {headerSize} is not {ImageFormat.FileHeaderSize}");
        var flags = (ImageFlags)BinaryPrimitives.ReadUInt32LittleEndian(src[12..]);
        if ((flags & ~(ImageFlags.FilePages | ImageFlags.Digest | ImageFlags.Packed | ImageFlags.Incremental)) != 0)
            throw new ImageFormatException(path, 12, $"unknown flags 0x{(uint)flags:x}");
        var header = new ImageHeader(
            Pid: BinaryPrimitives.ReadInt32LittleEndian(src[24..]),
            PageSize: (int)BinaryPrimitives.ReadUInt32LittleEndian(src[16..]),
            Architecture: BinaryPrimitives.ReadUInt16LittleEndian(src[20..]),
            Flags: flags,
            ImageId: BinaryPrimitives.ReadUInt64LittleEndian(src[40..]),
            Created: DateTimeOffset.FromUnixTimeMilliseconds(Math.Clamp(BinaryPrimitives.ReadInt64LittleEndian(src[32..]), 0, 253402300799999)))
        {
            Codec = (Codec)src[22],
            Encryption = (Encryption)src[23],
            KeySalt = src.Slice(48, ImageFormat.KeySaltSize).ToArray(),
            KeyCheck = src.Slice(64, ImageFormat.KeyCheckSize).ToArray(),
            ParentId = BinaryPrimitives.ReadUInt64LittleEndian(src[80..]),
            ChainDepth = BinaryPrimitives.ReadInt32LittleEndian(src[88..]),
        };
        if (header.Incremental != (header.ParentId != 0) || header.Incremental != (header.ChainDepth > 0) || header.ChainDepth < 0)
            throw new ImageFormatException(path, 80, $"parent image {header.ParentId:x16} at chain depth {header.ChainDepth} does not agree with the incremental flag");
        if (header.Codec is not (Codec.None or Codec.Lz4 or Codec.Zstd))
            throw new ImageFormatException(path, 22, $"unknown codec {(byte)header.Codec}");
        if (header.Encryption is < Encryption.None or > Encryption.Aes256Gcm)
            throw new ImageFormatException(path, 23, $"unknown encryption scheme {(byte)header.Encryption}");
        if (!header.Packed && (header.Codec != Codec.None || header.Encryption != Encryption.None))
            throw new ImageFormatException(path, 12, "compressed or encrypted image without the packed layout");
        return header;
    }
}

/// <summary>Pages [Start, End) an incremental image takes from the images before it.</summary>
public readonly record struct KeptRange(ulong Start, ulong End)
{
    public void Write(Span<byte> dest)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(dest, Start);
        BinaryPrimitives.WriteUInt64LittleEndian(dest[8..], End);
    }

    public static KeptRange Read(ReadOnlySpan<byte> src) => new(BinaryPrimitives.ReadUInt64LittleEndian(src), BinaryPrimitives.ReadUInt64LittleEndian(src[8..]));
}

/// <summary>A VMA as it was at checkpoint time, with how many bytes of it the image holds.</summary>
public readonly record struct ImageVma(ulong Start, ulong End, ushort Protection, VmaKind Kind, ulong Offset, ulong SavedBytes)
{
    public void Write(Span<byte> dest)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(dest, Start);
        BinaryPrimitives.WriteUInt64LittleEndian(dest[8..], End);
        BinaryPrimitives.WriteUInt64LittleEndian(dest[16..], Offset);
        BinaryPrimitives.WriteUInt64LittleEndian(dest[24..], SavedBytes);
        BinaryPrimitives.WriteUInt16LittleEndian(dest[32..], Protection);
        BinaryPrimitives.WriteUInt16LittleEndian(dest[34..], (ushort)Kind);
        BinaryPrimitives.WriteUInt32LittleEndian(dest[36..], 0);
    }

    public static ImageVma Read(ReadOnlySpan<byte> src) => new(
        Start: BinaryPrimitives.ReadUInt64LittleEndian(src),
        End: BinaryPrimitives.ReadUInt64LittleEndian(src[8..]),
        Protection: BinaryPrimitives.ReadUInt16LittleEndian(src[32..]),
        Kind: (VmaKind)BinaryPrimitives.ReadUInt16LittleEndian(src[34..]),
        Offset: BinaryPrimitives.ReadUInt64LittleEndian(src[16..]),
        SavedBytes: BinaryPrimitives.ReadUInt64LittleEndian(src[24..]));
}

/// <summary>
/// Where the page record for [Address, Address + Length) starts in the file, how many bytes it
/// stores, and the checksum of its pages (the record header's content checksum).
/// </summary>
public readonly record struct IndexEntry(ulong Address, int Length, int StoredLength, long FileOffset, ulong ContentChecksum = 0)
{
    public void Write(Span<byte> dest)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(dest, Address);
        BinaryPrimitives.WriteInt32LittleEndian(dest[8..], Length);
        BinaryPrimitives.WriteInt32LittleEndian(dest[12..], StoredLength);
        BinaryPrimitives.WriteInt64LittleEndian(dest[16..], FileOffset);
        BinaryPrimitives.WriteUInt64LittleEndian(dest[24..], ContentChecksum);
    }

    public static IndexEntry Read(ReadOnlySpan<byte> src) => new(
        BinaryPrimitives.ReadUInt64LittleEndian(src), BinaryPrimitives.ReadInt32LittleEndian(src[8..]),
        BinaryPrimitives.ReadInt32LittleEndian(src[12..]), BinaryPrimitives.ReadInt64LittleEndian(src[16..]),
        BinaryPrimitives.ReadUInt64LittleEndian(src[24..]));

    public ulong End => Address + (ulong)Length;
}

/// <summary>The fixed-size header in front of every record's payload.</summary>
public readonly record struct RecordHeader(
    RecordType Type,
    Codec Codec,
    ChecksumKind Checksum,
    Encryption Encryption,
    ulong Address,
    int OriginalLength,
    int StoredLength,
    ulong Sequence,
    ulong PayloadChecksum,
    ulong ContentChecksum)
{
    /// <summary>The bytes of the header that AES-GCM authenticates with the payload (all but the checksums).</summary>
    public const int AuthenticatedSize = 32;

    /// <summary>Encodes the header for a payload whose checksums are already known.</summary>
    public void Write(Span<byte> dest, ulong imageId)
    {
        WriteAuthenticated(dest);
        BinaryPrimitives.WriteUInt64LittleEndian(dest[32..], PayloadChecksum);
        BinaryPrimitives.WriteUInt64LittleEndian(dest[40..], ContentChecksum);
        BinaryPrimitives.WriteUInt64LittleEndian(dest[48..], 0);
        BinaryPrimitives.WriteUInt64LittleEndian(dest[56..], ImageFormat.Hash(dest[..56], imageId));
    }

    /// <summary>Writes bytes 0..31: magic, type, codec, checksum kind, encryption, address, lengths, number.</summary>
    public void WriteAuthenticated(Span<byte> dest)
    {
        ImageFormat.RecordMagic.CopyTo(dest);
        dest[4] = (byte)Type;
        dest[5] = (byte)Codec;
        dest[6] = (byte)Checksum;
        dest[7] = (byte)Encryption;
        BinaryPrimitives.WriteUInt64LittleEndian(dest[8..], Address);
        BinaryPrimitives.WriteInt32LittleEndian(dest[16..], OriginalLength);
        BinaryPrimitives.WriteInt32LittleEndian(dest[20..], StoredLength);
        BinaryPrimitives.WriteUInt64LittleEndian(dest[24..], Sequence);
    }

    /// <summary>A plain (not compressed, not encrypted) record: stored bytes are the content.</summary>
    public static RecordHeader Plain(RecordType type, ulong address, int length, ulong sequence, ulong checksum) =>
        new(type, Codec.None, ChecksumKind.XxHash3, Encryption.None, address, length, length, sequence, checksum, checksum);

    /// <summary>Decodes and checks a record header; <paramref name="offset"/> is only for messages.</summary>
    public static RecordHeader Read(ReadOnlySpan<byte> src, ulong imageId, string path, long offset)
    {
        if (!src[..4].SequenceEqual(ImageFormat.RecordMagic))
            throw new ImageFormatException(path, offset, "no record starts here (bad record magic)");
        if (BinaryPrimitives.ReadUInt64LittleEndian(src[56..]) != ImageFormat.Hash(src[..56], imageId))
            throw new ImageFormatException(path, offset, "record header checksum mismatch (corrupt, or a record of another image)");
        var h = new RecordHeader(
            Type: (RecordType)src[4],
            Codec: (Codec)src[5],
            Checksum: (ChecksumKind)src[6],
            Encryption: (Encryption)src[7],
            Address: BinaryPrimitives.ReadUInt64LittleEndian(src[8..]),
            OriginalLength: BinaryPrimitives.ReadInt32LittleEndian(src[16..]),
            StoredLength: BinaryPrimitives.ReadInt32LittleEndian(src[20..]),
            Sequence: BinaryPrimitives.ReadUInt64LittleEndian(src[24..]),
            PayloadChecksum: BinaryPrimitives.ReadUInt64LittleEndian(src[32..]),
            ContentChecksum: BinaryPrimitives.ReadUInt64LittleEndian(src[40..]));
        if (h.Type is < RecordType.VmaTable or > RecordType.Kept)
            throw new ImageFormatException(path, offset, $"unknown record type {(byte)h.Type}");
        if (h.Codec is < Codec.None or > Codec.Zero)
            throw new ImageFormatException(path, offset, $"record uses codec {(byte)h.Codec}, which this memcr cannot decode");
        if (h.Checksum != ChecksumKind.XxHash3)
            throw new ImageFormatException(path, offset, $"record uses checksum kind {(byte)h.Checksum}, which this memcr does not know");
        if (h.Encryption is < Encryption.None or > Encryption.Aes256Gcm)
            throw new ImageFormatException(path, offset, $"record uses encryption scheme {(byte)h.Encryption}, which this memcr does not know");
        if (h.Type != RecordType.Pages && (h.Codec != Codec.None || h.Encryption != Encryption.None))
            throw new ImageFormatException(path, offset, $"{h.Type} record is compressed or encrypted; only page records may be");
        int overhead = h.Encryption == Encryption.None ? 0 : ImageFormat.TagSize;
        if (h.OriginalLength < 0 || h.OriginalLength > ImageFormat.MaxRecordPayload
            || h.StoredLength < 0 || h.StoredLength > ImageFormat.MaxRecordPayload + overhead
            || (h.Codec == Codec.None && h.StoredLength != h.OriginalLength + overhead)
            || (h.Codec == Codec.Zero && h.StoredLength != overhead)
            || (h.Codec is Codec.Lz4 or Codec.Zstd && h.StoredLength > h.OriginalLength + overhead))
        {
            throw new ImageFormatException(path, offset, $"record lengths {h.StoredLength} stored / {h.OriginalLength} original are out of range");
        }
        if (h.Codec == Codec.None && h.Encryption == Encryption.None && h.ContentChecksum != h.PayloadChecksum)
            throw new ImageFormatException(path, offset, "record content checksum differs from its payload checksum");
        return h;
    }

    public bool PayloadMatches(ReadOnlySpan<byte> payload, ulong imageId) => ImageFormat.Hash(payload, imageId) == PayloadChecksum;

    /// <summary>Stored bytes are the pages themselves: no codec, no encryption.</summary>
    public bool IsPlain => Codec == Codec.None && Encryption == Encryption.None;
}

/// <summary>An image file that cannot be used: names the file, the byte offset and the problem.</summary>
public sealed class ImageFormatException(string path, long offset, string problem)
    : Exception($"image {path} is unusable at offset {offset}: {problem}")
{
    public string Path { get; } = path;

    public long Offset { get; } = offset;

    public string Problem { get; } = problem;
}
