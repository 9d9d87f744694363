using System.Buffers.Binary;
using Memcr.Image;

namespace Memcr.Tests;

public sealed class ImageFormatTests : IDisposable
{
    private const int Page = 4096;
    private readonly string _dir = Directory.CreateTempSubdirectory("memcr-image-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private sealed record Written(string Path, List<(ulong Address, byte[] Data)> Records, List<ImageVma> Vmas, ulong ImageId);

    private Written Write(int seed, int records = 5, string name = "img")
    {
        var random = new Random(seed);
        string path = Path.Combine(_dir, $"{name}-{seed}.img");
        ulong imageId = (ulong)random.NextInt64();
        var header = new ImageHeader(1234, Page, 62, ImageFlags.None, imageId, DateTimeOffset.UnixEpoch.AddDays(seed));
        var vmas = new List<ImageVma>();
        var recs = new List<(ulong, byte[])>();
        ulong address = 0x10000000;
        for (int i = 0; i < records; i++)
        {
            address += (ulong)(random.Next(0, 4) * Page);
            var data = new byte[random.Next(1, 6) * Page];
            random.NextBytes(data);
            recs.Add((address, data));
            vmas.Add(new ImageVma(address, address + (ulong)data.Length, 3, VmaKind.Anonymous, 0, (ulong)data.Length));
            address += (ulong)data.Length;
        }
        using (var file = File.OpenHandle(path, FileMode.CreateNew, FileAccess.ReadWrite))
        {
            using var w = new ImageWriter(file, path, header);
            w.WriteVmaTable(vmas);
            foreach (var (a, d) in recs)
                w.AppendPages(a, d, ImageWriter.Checksum(d, imageId));
            w.Finish();
            Assert.Equal(ImageWriter.SizeFor(vmas.Count, recs.Select(r => r.Item2.Length), Page), w.Length);
        }
        return new Written(path, recs, vmas, imageId);
    }

    [Theory]
    [InlineData(1, 0)]
    [InlineData(2, 1)]
    [InlineData(3, 17)]
    [InlineData(4, 200)]
    public void RandomImages_RoundTrip(int seed, int records)
    {
        var w = Write(seed, records);
        using var r = ImageReader.Open(w.Path);
        r.Verify(parallelism: 2);
        Assert.Equal(1234, r.Header.Pid);
        Assert.Equal(w.ImageId, r.Header.ImageId);
        Assert.Equal(w.Vmas, r.Vmas);
        Assert.Equal(w.Records.Count, r.Index.Count);
        using var buffer = new AlignedBuffer(1 << 20);
        int seen = 0;
        foreach (var batch in r.PlanBatches(buffer.Length))
        {
            r.ReadBatch(batch, buffer.Memory);
            for (int i = batch.First; i < batch.First + batch.Count; i++, seen++)
            {
                Assert.Equal(w.Records[i].Address, r.Index[i].Address);
                Assert.True(buffer.GetSpan().Slice(r.PayloadOffset(batch, i), r.Index[i].Length).SequenceEqual(w.Records[i].Data));
            }
        }
        Assert.Equal(w.Records.Count, seen);
        foreach (var entry in r.Index)
            Assert.Equal(0, (entry.FileOffset + ImageFormat.RecordHeaderSize) % Page);
    }

    private static ImageFormatException Refused(string path)
    {
        return Assert.Throws<ImageFormatException>(() =>
        {
            using var r = ImageReader.Open(path);
            r.Verify();
        });
    }

    [Fact]
    public void TruncatedImage_IsRefusedAtEveryLength()
    {
        var w = Write(7, 3);
        var bytes = File.ReadAllBytes(w.Path);
        string cut = Path.Combine(_dir, "cut.img");
        for (int len = 0; len < bytes.Length; len += 97)
        {
            File.WriteAllBytes(cut, bytes[..len]);
            var e = Refused(cut);
            Assert.Contains("truncated", e.Message);
        }
    }

    [Fact]
    public void EveryFlippedBit_IsDetected()
    {
        var w = Write(8, 2);
        var bytes = File.ReadAllBytes(w.Path);
        string bad = Path.Combine(_dir, "bad.img");
        var random = new Random(8);
        for (int i = 0; i < 400; i++)
        {
            var copy = (byte[])bytes.Clone();
            int bit = random.Next(copy.Length * 8);
            copy[bit / 8] ^= (byte)(1 << (bit % 8));
            File.WriteAllBytes(bad, copy);
            Refused(bad);
        }
    }

    [Fact]
    public void PayloadCorruption_NamesTheRecordAndAddress()
    {
        var w = Write(9, 4);
        using (var f = File.OpenHandle(w.Path, FileMode.Open, FileAccess.ReadWrite))
        {
            long offset;
            using (var r = ImageReader.Open(w.Path))
                offset = r.Index[2].FileOffset + ImageFormat.RecordHeaderSize + 100;
            var one = new byte[1];
            RandomAccess.Read(f, one, offset);
            one[0] ^= 0x40;
            RandomAccess.Write(f, one, offset);
        }
        var e = Refused(w.Path);
        Assert.Contains($"checksum mismatch in page record 2 (pages 0x{w.Records[2].Address:x}", e.Message);
    }

    [Fact]
    public void RecordFromAnotherImage_IsRefused()
    {
        var a = Write(10, 3, "a");
        var b = Write(11, 3, "b");
        var bytesA = File.ReadAllBytes(a.Path);
        var bytesB = File.ReadAllBytes(b.Path);
        // Splice b's VMA table record (right after the header) over a's: same place, other image.
        int vmaRecord = ImageFormat.RecordHeaderSize + a.Vmas.Count * ImageFormat.VmaEntrySize;
        Array.Copy(bytesB, ImageFormat.FileHeaderSize, bytesA, ImageFormat.FileHeaderSize, vmaRecord);
        File.WriteAllBytes(a.Path, bytesA);
        var e = Refused(a.Path);
        Assert.Contains("another image", e.Message);
    }

    [Fact]
    public void ForeignFile_AndNewerVersion_AreRefused()
    {
        string foreign = Path.Combine(_dir, "foreign.img");
        File.WriteAllBytes(foreign, new byte[4096]);
        Assert.Contains("not a memcr image", Refused(foreign).Message);

        var w = Write(12, 1);
        var bytes = File.ReadAllBytes(w.Path);
        BinaryPrimitives.WriteUInt16LittleEndian(bytes.AsSpan(8), 2);
        File.WriteAllBytes(w.Path, bytes);
        Assert.Contains("format version 2 is not supported", Refused(w.Path).Message);
    }

    [Fact]
    public void RandomMutations_NeverCrashOrHang()
    {
        var w = Write(13, 6);
        var bytes = File.ReadAllBytes(w.Path);
        string bad = Path.Combine(_dir, "fuzz.img");
        var random = new Random(13);
        for (int i = 0; i < 2000; i++)
        {
            var copy = (byte[])bytes.Clone();
            int edits = random.Next(1, 8);
            for (int e = 0; e < edits; e++)
                copy[random.Next(copy.Length)] = (byte)random.Next(256);
            int length = random.Next(10) == 0 ? random.Next(copy.Length) : copy.Length;
            File.WriteAllBytes(bad, copy[..length]);
            try
            {
                using var r = ImageReader.Open(bad);
                r.Verify();
            }
            catch (ImageFormatException)
            {
            }
        }
    }
}
