using System.Buffers.Binary;
using System.IO.Hashing;

namespace Memcr.Image;

/// <summary>Constants and layouts of image format v1 (docs/image-format.md). All integers little-endian.</summary>
public static class ImageFormat
{
    public const int Version = 1;
    public const int FileHeaderSize = 64;
    public const int RecordHeaderSize = 48;
    public const int VmaEntrySize = 40;
    public const int IndexEntrySize = 24;
    public const int EndPayloadSize = 32;

    /// <summary>Largest payload of one record: readers refuse anything bigger before allocating.</summary>
    public const int MaxRecordPayload = 64 << 20;

    public static ReadOnlySpan<byte> Magic => "MEMCRIMG"u8;

    public static ReadOnlySpan<byte> RecordMagic => "MREC"u8;

    internal static ulong Hash(ReadOnlySpan<byte> data, ulong imageId) => XxHash3.HashToUInt64(data, (long)imageId);

    internal static long AlignUp(long value, int alignment) => (value + alignment - 1) / alignment * alignment;

    /// <summary>
    /// Where the next page record's header goes when the previous record ends at <paramref name="end"/>:
    /// its payload starts on the first page boundary that leaves a whole page for padding and header.
    /// </summary>
    internal static long NextPageRecord(long end, int pageSize) => AlignUp(end, pageSize) + pageSize - RecordHeaderSize;
}

public enum RecordType : byte
{
    VmaTable = 1,
    Pages = 2,
    Index = 3,
    End = 4,
}

public enum Codec : byte
{
    None = 0,
}

public enum ChecksumKind : byte
{
    XxHash3 = 1,
}

public enum Encryption : byte
{
    None = 0,
}

[Flags]
public enum ImageFlags : uint
{
    None = 0,

    /// <summary>Written pages of private file mappings are included (memcr -f).</summary>
    FilePages = 1,
}

public enum VmaKind : ushort
{
    Anonymous = 1,
    Heap = 2,
    Stack = 3,
    File = 4,
}

/// <summary>The file header: what the image is of.</summary>
public sealed record ImageHeader(int Pid, int PageSize, ushort Architecture, ImageFlags Flags, ulong ImageId, DateTimeOffset Created)
{
    public void Write(Span<byte> dest)
    {
        dest[..ImageFormat.FileHeaderSize].Clear();
        ImageFormat.Magic.CopyTo(dest);
        BinaryPrimitives.WriteUInt16LittleEndian(dest[8..], ImageFormat.Version);
        BinaryPrimitives.WriteUInt16LittleEndian(dest[10..], ImageFormat.FileHeaderSize);
        BinaryPrimitives.WriteUInt32LittleEndian(dest[12..], (uint)Flags);
        BinaryPrimitives.WriteUInt32LittleEndian(dest[16..], (uint)PageSize);
        BinaryPrimitives.WriteUInt16LittleEndian(dest[20..], Architecture);
        BinaryPrimitives.WriteInt32LittleEndian(dest[24..], Pid);
        BinaryPrimitives.WriteInt64LittleEndian(dest[32..], Created.ToUnixTimeMilliseconds());
        BinaryPrimitives.WriteUInt64LittleEndian(dest[40..], ImageId);
        BinaryPrimitives.WriteUInt64LittleEndian(dest[56..], ImageFormat.Hash(dest[..56], 0));
    }

    public static ImageHeader Read(ReadOnlySpan<byte> src, string path)
    {
        if (src.Length < ImageFormat.FileHeaderSize)
            throw new ImageFormatException(path, 0, $"truncated: {src.Length} bytes, shorter than the {ImageFormat.FileHeaderSize}-byte header");
        if (!src[..8].SequenceEqual(ImageFormat.Magic))
            throw new ImageFormatException(path, 0, "not a memcr image (bad magic)");
        int version = BinaryPrimitives.ReadUInt16LittleEndian(src[8..]);
        if (version != ImageFormat.Version)
            throw new ImageFormatException(path, 8, $"format version {version} is not supported (this memcr reads version {ImageFormat.Version})");
        if (BinaryPrimitives.ReadUInt64LittleEndian(src[56..]) != ImageFormat.Hash(src[..56], 0))
            throw new ImageFormatException(path, 56, "header checksum mismatch");
        int headerSize = BinaryPrimitives.ReadUInt16LittleEndian(src[10..]);
        if (headerSize != ImageFormat.FileHeaderSize)
            throw new ImageFormatException(path, 10, $"header size {headerSize} is not {ImageFormat.FileHeaderSize}");
        return new ImageHeader(
            Pid: BinaryPrimitives.ReadInt32LittleEndian(src[24..]),
            PageSize: (int)BinaryPrimitives.ReadUInt32LittleEndian(src[16..]),
            Architecture: BinaryPrimitives.ReadUInt16LittleEndian(src[20..]),
            Flags: (ImageFlags)BinaryPrimitives.ReadUInt32LittleEndian(src[12..]),
            ImageId: BinaryPrimitives.ReadUInt64LittleEndian(src[40..]),
            Created: DateTimeOffset.FromUnixTimeMilliseconds(BinaryPrimitives.ReadInt64LittleEndian(src[32..])));
    }
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

/// <summary>Where the page record for [Address, Address + Length) starts in the file.</summary>
public readonly record struct IndexEntry(ulong Address, int Length, long FileOffset)
{
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
    ulong PayloadChecksum)
{
    /// <summary>Encodes the header for a payload whose checksum is already known.</summary>
    public void Write(Span<byte> dest, ulong imageId)
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
        BinaryPrimitives.WriteUInt64LittleEndian(dest[32..], PayloadChecksum);
        BinaryPrimitives.WriteUInt64LittleEndian(dest[40..], ImageFormat.Hash(dest[..40], imageId));
    }

    public static RecordHeader ForPayload(RecordType type, ulong address, ReadOnlySpan<byte> payload, ulong sequence, ulong imageId) =>
        new(type, Codec.None, ChecksumKind.XxHash3, Encryption.None, address, payload.Length, payload.Length, sequence, ImageFormat.Hash(payload, imageId));

    /// <summary>Decodes and checks a record header; <paramref name="offset"/> is only for messages.</summary>
    public static RecordHeader Read(ReadOnlySpan<byte> src, ulong imageId, string path, long offset)
    {
        if (!src[..4].SequenceEqual(ImageFormat.RecordMagic))
            throw new ImageFormatException(path, offset, "no record starts here (bad record magic)");
        if (BinaryPrimitives.ReadUInt64LittleEndian(src[40..]) != ImageFormat.Hash(src[..40], imageId))
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
            PayloadChecksum: BinaryPrimitives.ReadUInt64LittleEndian(src[32..]));
        if (h.Type is < RecordType.VmaTable or > RecordType.End)
            throw new ImageFormatException(path, offset, $"unknown record type {(byte)h.Type}");
        if (h.Codec != Codec.None)
            throw new ImageFormatException(path, offset, $"record uses codec {(byte)h.Codec}, which this memcr cannot decode");
        if (h.Checksum != ChecksumKind.XxHash3)
            throw new ImageFormatException(path, offset, $"record uses checksum kind {(byte)h.Checksum}, which this memcr does not know");
        if (h.Encryption != Encryption.None)
            throw new ImageFormatException(path, offset, $"record is encrypted (scheme {(byte)h.Encryption}), which this memcr cannot decrypt");
        if (h.StoredLength < 0 || h.StoredLength > ImageFormat.MaxRecordPayload || h.OriginalLength != h.StoredLength)
            throw new ImageFormatException(path, offset, $"record length {h.StoredLength} is out of range");
        return h;
    }

    public bool PayloadMatches(ReadOnlySpan<byte> payload, ulong imageId) => ImageFormat.Hash(payload, imageId) == PayloadChecksum;
}

/// <summary>An image file that cannot be used: names the file, the byte offset and the problem.</summary>
public sealed class ImageFormatException(string path, long offset, string problem)
    : Exception($"image {path} is unusable at offset {offset}: {problem}")
{
    public string Path { get; } = path;

    public long Offset { get; } = offset;

    public string Problem { get; } = problem;
}
