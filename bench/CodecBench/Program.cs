// Measures the codecs memcr can use on this machine, per 1 MiB record, one thread:
// K4os LZ4 (fast), ZstdSharp (managed zstd port) at levels 1 and 3, and the system libzstd.
using System.Diagnostics;
using System.Runtime.InteropServices;
using K4os.Compression.LZ4;

const int Record = 1 << 20;
int mb = args.Length > 0 ? int.Parse(args[0], System.Globalization.CultureInfo.InvariantCulture) : 256;
foreach (var (name, data) in new[] { ("program-like", Fill(mb, program: true)), ("random", Fill(mb, program: false)) })
{
    Console.WriteLine($"{name} data, {mb} MiB in 1 MiB records:");
    var output = new byte[LZ4Codec.MaximumOutputSize(Record) + 1024];
    var back = new byte[Record];
    Measure("lz4 (K4os, L00_FAST)", data, output, back,
        (s, d) => LZ4Codec.Encode(s, d, LZ4Level.L00_FAST),
        (s, d) => LZ4Codec.Decode(s, d));
    foreach (int level in new[] { 1, 3 })
    {
        using var c = new ZstdSharp.Compressor(level);
        using var dc = new ZstdSharp.Decompressor();
        Measure($"zstd {level} (ZstdSharp)", data, output, back, (s, d) => c.Wrap(s, d), (s, d) => dc.Unwrap(s, d));
    }
    Measure("lz4 (system liblz4)", data, output, back, Native.Lz4Compress, Native.Lz4Decompress);
    foreach (int level in new[] { 1, 3 })
        Measure($"zstd {level} (system libzstd)", data, output, back, (s, d) => Native.Compress(s, d, level), Native.Decompress);
}

static byte[] Fill(int mb, bool program)
{
    var data = new byte[(long)mb << 20];
    var words = MemoryMarshal.Cast<byte, ulong>(data.AsSpan());
    for (int i = 0; i < words.Length; i++)
        words[i] = program ? ProgramWord((ulong)i) : Mix((ulong)i * 0x100000001b3UL);
    return data;
}

// Memory that looks like a program's, per 64-byte line: half the lines zero, most others
// structs of small integers, pointers and zeros, some text. Same generator as memtest.c's "program" fill.
static ulong ProgramWord(ulong i)
{
    ulong h = Mix(i / 8);
    ulong g = Mix(h + (i % 8));
    return (h & 0xff) switch
    {
        < 128 => 0,
        < 224 => (g & 3) switch
        {
            0 or 3 => 0,
            1 => (g >> 32) & 0xff,
            _ => 0x0000_5555_5555_0000UL | ((g >> 16) & 0xfff0),
        },
        _ => 0x6161616161616161UL + ((g & 0x0f0f0f0f0f0f0f0fUL) % 0x0f0f0f0f0f0f0f0fUL),
    };
}

static ulong Mix(ulong x)
{
    x += 0x9e3779b97f4a7c15UL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9UL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebUL;
    return x ^ (x >> 31);
}

static void Measure(string name, byte[] data, byte[] output, byte[] back, Func<ReadOnlySpan<byte>, Span<byte>, int> encode, Func<ReadOnlySpan<byte>, Span<byte>, int> decode)
{
    long stored = 0;
    double enc = 0, dec = 0;
    for (int off = 0; off < data.Length; off += Record)
    {
        var src = data.AsSpan(off, Record);
        long t0 = Stopwatch.GetTimestamp();
        int n = encode(src, output);
        long t1 = Stopwatch.GetTimestamp();
        int m = decode(output.AsSpan(0, n), back);
        long t2 = Stopwatch.GetTimestamp();
        if (m != Record || !back.AsSpan().SequenceEqual(src))
            throw new InvalidOperationException(name + " round trip failed");
        stored += n;
        enc += Stopwatch.GetElapsedTime(t0, t1).TotalSeconds;
        dec += Stopwatch.GetElapsedTime(t1, t2).TotalSeconds;
    }
    double gb = data.Length / 1e9;
    Console.WriteLine($"  {name,-28} compress {gb / enc,5:F2} GB/s  decompress {gb / dec,5:F2} GB/s  ratio {(double)data.Length / stored,6:F2}");
}

internal static partial class Native
{
    [LibraryImport("libzstd.so.1", EntryPoint = "ZSTD_compress")]
    private static unsafe partial nuint ZstdCompress(byte* dst, nuint dstCap, byte* src, nuint srcSize, int level);

    [LibraryImport("libzstd.so.1", EntryPoint = "ZSTD_decompress")]
    private static unsafe partial nuint ZstdDecompress(byte* dst, nuint dstCap, byte* src, nuint srcSize);

    [LibraryImport("liblz4.so.1", EntryPoint = "LZ4_compress_default")]
    private static unsafe partial int Lz4CompressDefault(byte* src, byte* dst, int srcSize, int dstCap);

    [LibraryImport("liblz4.so.1", EntryPoint = "LZ4_decompress_safe")]
    private static unsafe partial int Lz4DecompressSafe(byte* src, byte* dst, int srcSize, int dstCap);

    public static unsafe int Lz4Compress(ReadOnlySpan<byte> s, Span<byte> d)
    {
        fixed (byte* sp = s)
        fixed (byte* dp = d)
            return Lz4CompressDefault(sp, dp, s.Length, d.Length);
    }

    public static unsafe int Lz4Decompress(ReadOnlySpan<byte> s, Span<byte> d)
    {
        fixed (byte* sp = s)
        fixed (byte* dp = d)
            return Lz4DecompressSafe(sp, dp, s.Length, d.Length);
    }

    public static unsafe int Compress(ReadOnlySpan<byte> s, Span<byte> d, int level)
    {
        fixed (byte* sp = s)
        fixed (byte* dp = d)
            return (int)ZstdCompress(dp, (nuint)d.Length, sp, (nuint)s.Length, level);
    }

    public static unsafe int Decompress(ReadOnlySpan<byte> s, Span<byte> d)
    {
        fixed (byte* sp = s)
        fixed (byte* dp = d)
            return (int)ZstdDecompress(dp, (nuint)d.Length, sp, (nuint)s.Length);
    }
}
