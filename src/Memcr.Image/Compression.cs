using System.Runtime.InteropServices;
using K4os.Compression.LZ4;

namespace Memcr.Image;

/// <summary>
/// LZ4 (block format) and zstd for page records. The system's liblz4 and libzstd are used when
/// they can be loaded: on this kind of machine they compress 1.4-1.7x faster than the managed
/// ports (bench/CodecBench). Otherwise K4os.Compression.LZ4 and ZstdSharp, which write and read
/// the same formats, so an image written with one reads with the other.
/// </summary>
public static unsafe class Compression
{
    private static readonly delegate* unmanaged<byte*, byte*, int, int, int> Lz4Compress;
    private static readonly delegate* unmanaged<byte*, byte*, int, int, int> Lz4Decompress;
    private static readonly delegate* unmanaged<byte*, nuint, byte*, nuint, int, nuint> ZstdCompress;
    private static readonly delegate* unmanaged<byte*, nuint, byte*, nuint, nuint> ZstdDecompress;
    private static readonly delegate* unmanaged<nuint, uint> ZstdIsError;

    /// <summary>zstd level: 1 is the fastest standard level and measured within 2% of level 3's ratio on program memory.</summary>
    public const int ZstdLevel = 1;

    static Compression()
    {
        if (NativeLibrary.TryLoad("liblz4.so.1", out nint lz4)
            && NativeLibrary.TryGetExport(lz4, "LZ4_compress_default", out nint c)
            && NativeLibrary.TryGetExport(lz4, "LZ4_decompress_safe", out nint d))
        {
            Lz4Compress = (delegate* unmanaged<byte*, byte*, int, int, int>)c;
            Lz4Decompress = (delegate* unmanaged<byte*, byte*, int, int, int>)d;
        }
        if (NativeLibrary.TryLoad("libzstd.so.1", out nint zstd)
            && NativeLibrary.TryGetExport(zstd, "ZSTD_compress", out nint zc)
            && NativeLibrary.TryGetExport(zstd, "ZSTD_decompress", out nint zd)
            && NativeLibrary.TryGetExport(zstd, "ZSTD_isError", out nint ze))
        {
            ZstdCompress = (delegate* unmanaged<byte*, nuint, byte*, nuint, int, nuint>)zc;
            ZstdDecompress = (delegate* unmanaged<byte*, nuint, byte*, nuint, nuint>)zd;
            ZstdIsError = (delegate* unmanaged<nuint, uint>)ze;
        }
    }

    /// <summary>Which implementation each codec uses, for logs and the note in --verbose.</summary>
    public static string Implementations =>
        $"lz4: {(Lz4Compress != null ? "system liblz4" : "K4os.Compression.LZ4")}, zstd: {(ZstdCompress != null ? "system libzstd" : "ZstdSharp")}";

    [ThreadStatic]
    private static ZstdSharp.Compressor? t_zstdCompressor;

    [ThreadStatic]
    private static ZstdSharp.Decompressor? t_zstdDecompressor;

    /// <summary>
    /// Compresses <paramref name="source"/> into <paramref name="dest"/>; returns the compressed
    /// length, or 0 when it does not fit in <paramref name="dest"/> (the data does not compress).
    /// </summary>
    public static int Compress(Codec codec, ReadOnlySpan<byte> source, Span<byte> dest)
    {
        fixed (byte* s = source)
        fixed (byte* d = dest)
        {
            switch (codec)
            {
                case Codec.Lz4 when Lz4Compress != null:
                    return Lz4Compress(s, d, source.Length, dest.Length);
                case Codec.Zstd when ZstdCompress != null:
                    nuint r = ZstdCompress(d, (nuint)dest.Length, s, (nuint)source.Length, ZstdLevel);
                    return ZstdIsError(r) != 0 ? 0 : (int)r;
                default:
                    return ManagedCompress(codec, source, dest);
            }
        }
    }

    /// <summary><see cref="Compress"/> with the managed ports only.</summary>
    internal static int ManagedCompress(Codec codec, ReadOnlySpan<byte> source, Span<byte> dest)
    {
        switch (codec)
        {
            case Codec.Lz4:
                int n = LZ4Codec.Encode(source, dest, LZ4Level.L00_FAST);
                return n < 0 ? 0 : n;
            case Codec.Zstd:
                t_zstdCompressor ??= new ZstdSharp.Compressor(ZstdLevel);
                return t_zstdCompressor.TryWrap(source, dest, out int written) ? written : 0;
            default:
                throw new ArgumentOutOfRangeException(nameof(codec), codec, "not a compressing codec");
        }
    }

    /// <summary>Decompresses into exactly <paramref name="dest"/>; false if the data is not a valid stream of that length.</summary>
    public static bool Decompress(Codec codec, ReadOnlySpan<byte> source, Span<byte> dest)
    {
        fixed (byte* s = source)
        fixed (byte* d = dest)
        {
            switch (codec)
            {
                case Codec.Lz4 when Lz4Decompress != null:
                    return Lz4Decompress(s, d, source.Length, dest.Length) == dest.Length;
                case Codec.Zstd when ZstdDecompress != null:
                    nuint r = ZstdDecompress(d, (nuint)dest.Length, s, (nuint)source.Length);
                    return ZstdIsError(r) == 0 && r == (nuint)dest.Length;
                default:
                    return ManagedDecompress(codec, source, dest);
            }
        }
    }

    /// <summary><see cref="Decompress"/> with the managed ports only.</summary>
    internal static bool ManagedDecompress(Codec codec, ReadOnlySpan<byte> source, Span<byte> dest)
    {
        switch (codec)
        {
            case Codec.Lz4:
                return LZ4Codec.Decode(source, dest) == dest.Length;
            case Codec.Zstd:
                t_zstdDecompressor ??= new ZstdSharp.Decompressor();
                try
                {
                    return t_zstdDecompressor.TryUnwrap(source, dest, out int written) && written == dest.Length;
                }
                catch (ZstdSharp.ZstdException)
                {
                    return false;
                }
            default:
                throw new ArgumentOutOfRangeException(nameof(codec), codec, "not a compressing codec");
        }
    }
}
