using System.Text;
using System.Text.Json;
using Memcr.CriuImages.Json;

namespace Memcr.CriuImages.Tests;

/// <summary>
/// Damaged images and JSON, with fixed seeds: every truncation length and random byte flips of
/// every fixture. Each must decode cleanly or fail with a <see cref="CriuImageException"/> (never
/// another exception, never a hang), allocating no more than a small multiple of its size.
/// </summary>
public sealed class FuzzTests
{
    public static TheoryData<string, string> Images => Fixtures.AllImages();

    /// <summary>Reads and decodes <paramref name="bytes"/> completely; returns whether it was refused.</summary>
    private static bool TryDecode(byte[] bytes)
    {
        long before = GC.GetAllocatedBytesForCurrentThread();
        bool refused = false;
        try
        {
            using var reader = CriuImageReader.Open(new MemoryStream(bytes), "fuzz");
            CritJson.Decode(reader, TextWriter.Null, pretty: true);
        }
        catch (CriuImageException e)
        {
            Assert.StartsWith("fuzz: ", e.Message, StringComparison.Ordinal);
            Assert.DoesNotContain('\n', e.Message);
            refused = true;
        }
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.True(allocated < 64L * bytes.Length + (16 << 20), $"decoding {bytes.Length} bytes allocated {allocated} bytes");
        return refused;
    }

    [Theory]
    [MemberData(nameof(Images))]
    public void EveryTruncation_IsRefusedOrDecodesWhole(string scenario, string image)
    {
        var bytes = File.ReadAllBytes(Path.Combine(Fixtures.Images(scenario), image));
        int step = Math.Max(1, bytes.Length / 400);
        for (int n = 0; n < bytes.Length; n += step)
        {
            // A cut between entries leaves a valid, shorter image; anywhere else it must be refused.
            TryDecode(bytes[..n]);
        }
        Assert.True(TryDecode(bytes[..^1]), "an image cut by one byte must be refused");
    }

    [Theory]
    [MemberData(nameof(Images))]
    public void RandomByteFlips_AreRefusedOrDecode(string scenario, string image)
    {
        var original = File.ReadAllBytes(Path.Combine(Fixtures.Images(scenario), image));
        var rng = new Random(HashCode(scenario + image));
        for (int round = 0; round < 150; round++)
        {
            var bytes = (byte[])original.Clone();
            for (int flips = rng.Next(1, 4); flips > 0; flips--)
                bytes[rng.Next(bytes.Length)] ^= (byte)(1 << rng.Next(8));
            TryDecode(bytes);
        }
    }

    [Theory]
    [MemberData(nameof(Images))]
    public void DamagedJson_IsRefusedCleanlyOrEncodes(string scenario, string image)
    {
        string json = File.ReadAllText(Fixtures.CritJsonOf(scenario, image));
        var rng = new Random(HashCode(image + scenario));
        for (int round = 0; round < 40; round++)
        {
            var b = new StringBuilder(json);
            if (round % 2 == 0)
                b.Length = rng.Next(b.Length);
            else
                b[rng.Next(b.Length)] = "0x:\"{}[],-9aZ "[rng.Next(14)];
            try
            {
                using var doc = JsonDocument.Parse(b.ToString());
                CritJson.Encode(doc.RootElement, Stream.Null, "fuzz.json");
            }
            catch (JsonException)
            {
            }
            catch (CriuImageException e)
            {
                Assert.StartsWith("fuzz.json: $", e.Message, StringComparison.Ordinal);
            }
        }
    }

    /// <summary>A seed that is the same on every run (string.GetHashCode is randomised per process).</summary>
    private static int HashCode(string s) => s.Aggregate(17, (h, c) => unchecked(h * 31 + c));
}
