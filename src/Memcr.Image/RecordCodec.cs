namespace Memcr.Image;

/// <summary>
/// Turns the pages of one record into its stored payload: all-zero records cost nothing, others
/// are compressed when that makes them smaller, then encrypted. One instance per thread.
/// </summary>
public sealed class RecordEncoder(ulong imageId, Codec codec, ImageCipher? cipher) : IDisposable
{
    /// <summary>Bytes <see cref="Encode"/> may write for <paramref name="pageBytes"/> of pages.</summary>
    public static int MaxStored(int pageBytes) => pageBytes + ImageFormat.TagSize;

    /// <summary>Encodes the record into <paramref name="dest"/> (at least <see cref="MaxStored"/> bytes); the header says how many bytes were used.</summary>
    public RecordHeader Encode(ulong address, ulong sequence, ReadOnlySpan<byte> pages, Span<byte> dest)
    {
        ulong content = ImageFormat.Hash(pages, imageId);
        var used = Codec.None;
        int plainLength = pages.Length;
        if (codec != Codec.None)
        {
            if (!pages.ContainsAnyExcept((byte)0))
            {
                used = Codec.Zero;
                plainLength = 0;
            }
            else
            {
                // Only worth keeping when smaller: a compressor that cannot fit the data in fewer
                // bytes gives up early (fast on incompressible memory) and the pages are stored as they are.
                int n = Compression.Compress(codec, pages, dest[..(pages.Length - 1)]);
                if (n > 0)
                {
                    used = codec;
                    plainLength = n;
                }
            }
        }
        var encryption = cipher?.Scheme ?? Encryption.None;
        int stored = plainLength + (cipher is null ? 0 : ImageFormat.TagSize);
        var header = new RecordHeader(RecordType.Pages, used, ChecksumKind.XxHash3, encryption, address, pages.Length, stored, sequence, 0, content);
        // The plaintext is the compressed bytes already in dest, or the pages themselves: those
        // are encrypted straight into dest, or copied there when there is no cipher.
        var plain = used == Codec.None ? pages : dest[..plainLength];
        if (cipher is not null)
            cipher.Encrypt(header, plain, dest);
        else if (used == Codec.None)
            pages.CopyTo(dest);
        return header with { PayloadChecksum = ImageFormat.Hash(dest[..stored], imageId) };
    }

    public void Dispose() => cipher?.Dispose();
}

/// <summary>Turns a stored payload back into pages, authenticating and checking it. One instance per thread.</summary>
public sealed class RecordDecoder(string path, ulong imageId, ImageCipher? cipher) : IDisposable
{
    private byte[] _scratch = [];

    public void Decode(in RecordHeader h, long offset, ReadOnlySpan<byte> stored, Span<byte> pages)
    {
        long record = (long)h.Sequence - 1;
        string where = $"page record {record} (pages 0x{h.Address:x}-0x{h.Address + (ulong)h.OriginalLength:x})";
        if (pages.Length != h.OriginalLength)
            throw new ArgumentException($"{pages.Length}-byte buffer for a {h.OriginalLength}-byte record", nameof(pages));
        var plain = stored;
        if (h.Encryption != Encryption.None)
        {
            if (cipher is null)
                throw new ImageFormatException(path, offset, $"{where} is encrypted and no key was given");
            int length = stored.Length - ImageFormat.TagSize;
            Span<byte> into;
            if (h.Codec == Codec.None)
            {
                into = pages;
            }
            else
            {
                if (_scratch.Length < length)
                    _scratch = GC.AllocateUninitializedArray<byte>(Math.Max(length, 1 << 20));
                into = _scratch.AsSpan(0, length);
            }
            if (!cipher.TryDecrypt(h, stored, into))
                throw new ImageFormatException(path, offset, $"{where} fails authentication: it was altered, or sealed with another key");
            plain = into[..length];
        }
        switch (h.Codec)
        {
            case Codec.None:
                if (h.Encryption == Encryption.None)
                    plain.CopyTo(pages);
                break;
            case Codec.Zero:
                pages.Clear();
                break;
            default:
                if (!Compression.Decompress(h.Codec, plain, pages))
                    throw new ImageFormatException(path, offset, $"{where}: its {h.Codec} data does not decode to {h.OriginalLength} bytes");
                break;
        }
        if (ImageFormat.Hash(pages, imageId) != h.ContentChecksum)
            throw new ImageFormatException(path, offset, $"content checksum mismatch in {where}: the decoded pages differ from those checkpointed");
    }

    public void Dispose() => cipher?.Dispose();
}
