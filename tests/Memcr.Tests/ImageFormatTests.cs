using System.Buffers.Binary;
using CsCheck;
using Memcr.Image;
using Memcr.Linux.Memory;

namespace Memcr.Tests;

public sealed class ImageFormatTests : IDisposable
{
    private const int Page = 4096;
    private static readonly byte[] Key256 = Enumerable.Range(1, 32).Select(i => (byte)i).ToArray();
    private readonly string _dir = Directory.CreateTempSubdirectory("memcr-image-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private sealed record Written(string Path, List<(ulong Address, byte[] Data)> Records, List<ImageVma> Vmas, ulong ImageId);

    private sealed record Kind(Codec Codec = Codec.None, Encryption Encryption = Encryption.None, bool Digest = false)
    {
        public bool Packed => Codec != Codec.None || Encryption != Encryption.None;
    }

    private static readonly Kind Plain = new();
    private static readonly Kind Lz4Encrypted = new(Codec.Lz4, Encryption.Aes256Gcm, Digest: true);

    /// <summary>Pages as programs have them: random, all zero, or compressible (small integers and zeros).</summary>
    private static byte[] Pages(Random random, int pages)
    {
        var data = new byte[pages * Page];
        switch (random.Next(3))
        {
            case 0:
                random.NextBytes(data);
                break;
            case 1:
                break;
            default:
                for (int i = 0; i < data.Length; i += 8)
                    data[i] = (byte)random.Next(4);
                break;
        }
        return data;
    }

    private Written Write(int seed, int records = 5, string name = "img", Kind? kind = null, Func<RecordHeader, RecordHeader>? tamper = null)
    {
        kind ??= Plain;
        var random = new Random(seed);
        string path = Path.Combine(_dir, $"{name}-{seed}.img");
        ulong imageId = (ulong)random.NextInt64();
        var flags = (kind.Digest ? ImageFlags.Digest : ImageFlags.None) | (kind.Packed ? ImageFlags.Packed : ImageFlags.None);
        var header = new ImageHeader(1234, Page, 62, flags, imageId, DateTimeOffset.UnixEpoch.AddDays(seed))
        {
            Codec = kind.Codec,
            Encryption = kind.Encryption,
        };
        ImageCipher? cipher = null;
        if (kind.Encryption != Encryption.None)
            (cipher, header) = ImageCipher.ForNewImage(header, Key256.AsSpan(0, ImageCipher.KeyLength(kind.Encryption)));
        var vmas = new List<ImageVma>();
        var recs = new List<(ulong, byte[])>();
        ulong address = 0x10000000;
        for (int i = 0; i < records; i++)
        {
            address += (ulong)(random.Next(0, 4) * Page);
            var data = Pages(random, random.Next(1, 6));
            recs.Add((address, data));
            vmas.Add(new ImageVma(address, address + (ulong)data.Length, 3, VmaKind.Anonymous, 0, (ulong)data.Length));
            address += (ulong)data.Length;
        }
        using (var file = File.OpenHandle(path, FileMode.CreateNew, FileAccess.ReadWrite))
        using (var encoder = new RecordEncoder(imageId, kind.Codec, cipher))
        {
            using var w = new ImageWriter(file, path, header);
            w.WriteVmaTable(vmas);
            var stored = new byte[RecordEncoder.MaxStored(5 * Page)];
            foreach (var (a, d) in recs)
            {
                if (kind.Packed)
                {
                    var h = encoder.Encode(a, w.NextSequence, d, stored);
                    w.AppendRecord(tamper?.Invoke(h) ?? h, stored.AsSpan(0, h.StoredLength));
                }
                else
                {
                    w.AppendPages(a, d, ImageWriter.Checksum(d, imageId));
                }
            }
            w.Finish();
            if (!kind.Packed)
                Assert.Equal(ImageWriter.SizeFor(vmas.Count, recs.Select(r => r.Item2.Length), Page, packed: false), w.Length);
            FileOpsTruncate(path, w.Length);
        }
        return new Written(path, recs, vmas, imageId);
    }

    private static void FileOpsTruncate(string path, long length)
    {
        using var f = new FileStream(path, FileMode.Open);
        f.SetLength(length);
    }

    /// <summary>Reads every record back through the reader's decoder.</summary>
    private static List<(ulong Address, byte[] Data)> ReadAll(ImageReader r)
    {
        var result = new List<(ulong, byte[])>();
        using var buffer = new AlignedBuffer(1 << 20);
        using var decoder = r.CreateDecoder();
        foreach (var batch in r.PlanBatches(buffer.Length))
        {
            var headers = r.ReadBatch(batch, buffer.Memory);
            for (int i = batch.First; i < batch.First + batch.Count; i++)
            {
                var pages = new byte[r.Index[i].Length];
                r.Decode(batch, buffer.GetSpan(), headers, i, decoder, pages);
                result.Add((r.Index[i].Address, pages));
            }
        }
        return result;
    }

    private static void AssertSame(Written w, ImageReader r)
    {
        Assert.Equal(1234, r.Header.Pid);
        Assert.Equal(w.ImageId, r.Header.ImageId);
        Assert.Equal(w.Vmas, r.Vmas);
        var back = ReadAll(r);
        Assert.Equal(w.Records.Count, back.Count);
        for (int i = 0; i < back.Count; i++)
        {
            Assert.Equal(w.Records[i].Address, back[i].Address);
            Assert.True(back[i].Data.AsSpan().SequenceEqual(w.Records[i].Data), $"record {i} differs");
        }
    }

    public static TheoryData<Codec, Encryption, bool> EveryCombination()
    {
        var data = new TheoryData<Codec, Encryption, bool>();
        foreach (var codec in new[] { Codec.None, Codec.Lz4, Codec.Zstd })
        {
            foreach (var encryption in new[] { Encryption.None, Encryption.Aes128Gcm, Encryption.Aes192Gcm, Encryption.Aes256Gcm })
            {
                data.Add(codec, encryption, false);
                data.Add(codec, encryption, true);
            }
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(EveryCombination))]
    public void EveryCodecChecksumEncryption_RoundTrips(Codec codec, Encryption encryption, bool digest)
    {
        var w = Write(100 + (int)codec * 10 + (int)encryption, 40, kind: new Kind(codec, encryption, digest));
        using var r = ImageReader.Open(w.Path, key: Key256[..(encryption == Encryption.None ? 32 : ImageCipher.KeyLength(encryption))]);
        r.Verify(parallelism: 2, decode: true);
        Assert.Equal(digest, r.Digest is not null);
        AssertSame(w, r);
        if (codec != Codec.None)
            Assert.True(r.StoredBytes < r.PageBytes);
    }

    [Fact]
    public void IncrementalImage_KeepsItsParentAndKeptRanges_CoveredByItsChecksumsAndDigest()
    {
        string path = Path.Combine(_dir, "incremental.img");
        const ulong imageId = 0x1234567890abcdef, parentId = 0xfedcba0987654321;
        var header = new ImageHeader(1234, Page, 62, ImageFlags.Incremental | ImageFlags.Packed | ImageFlags.Digest, imageId, DateTimeOffset.UnixEpoch)
        {
            ParentId = parentId,
            ChainDepth = 2,
        };
        KeptRange[] kept = [new(0x10000000, 0x10004000), new(0x10008000, 0x10009000)];
        var data = Pages(new Random(7), 2);
        using (var file = File.OpenHandle(path, FileMode.CreateNew, FileAccess.ReadWrite))
        using (var encoder = new RecordEncoder(imageId, Codec.None, null))
        {
            using var w = new ImageWriter(file, path, header);
            w.WriteVmaTable([new ImageVma(0x10000000, 0x10010000, 3, VmaKind.Anonymous, 0, (ulong)data.Length)]);
            var stored = new byte[RecordEncoder.MaxStored(data.Length)];
            var h = encoder.Encode(0x10004000, w.NextSequence, data, stored);
            w.AppendRecord(h, stored.AsSpan(0, h.StoredLength));
            Assert.Throws<ArgumentException>(() => w.Finish());
            w.Finish(kept);
            Assert.Equal(ImageWriter.SizeFor(1, [h.StoredLength], Page, packed: true, keptRanges: kept.Length), w.Length);
            FileOpsTruncate(path, w.Length);
        }
        using (var r = ImageReader.Open(path))
        {
            Assert.True(r.Header.Incremental);
            Assert.Equal(parentId, r.Header.ParentId);
            Assert.Equal(2, r.Header.ChainDepth);
            Assert.Equal(kept, r.Kept);
            Assert.Equal(data, ReadAll(r).Single().Data);
        }
        // The kept record is the one before the end record: its last entry's last byte, flipped.
        long at = new FileInfo(path).Length - ImageFormat.RecordHeaderSize - ImageFormat.EndPayloadSize - 1;
        using (var f = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite))
        {
            var b = new byte[1];
            RandomAccess.Read(f, b, at);
            b[0] ^= 1;
            RandomAccess.Write(f, b, at);
        }
        var e = Assert.Throws<ImageFormatException>(() => ImageReader.Open(path).Dispose());
        Assert.Contains("Kept record checksum mismatch", e.Message);
    }

    [Fact]
    public void VmaTable_KeepsItsEntriesAsTheImageStoresThem()
    {
        var table = new VmaTable();
        var expected = Enumerable.Range(0, 1000)
            .Select(i => new ImageVma((ulong)i << 12, (ulong)(i + 1) << 12, (ushort)(i % 8), (VmaKind)(1 + i % 4), (ulong)i * 3, (ulong)i))
            .ToList();
        expected.ForEach(table.Add);
        Assert.Equal(expected, table);
        Assert.Equal(expected[999], table[999]);
        Assert.Equal(1000 * ImageFormat.VmaEntrySize, table.Bytes.Length);
        Assert.Equal(expected[5], ImageVma.Read(table.Bytes[(5 * ImageFormat.VmaEntrySize)..]));
        Assert.Throws<ArgumentOutOfRangeException>(() => table[1000]);
    }

    [Fact]
    public void RandomVmaTablesAndPageSets_RoundTrip()
    {
        var kinds = new[] { Plain, new Kind(Codec.Lz4), new Kind(Codec.Zstd, Digest: true), new Kind(Encryption: Encryption.Aes256Gcm), Lz4Encrypted };
        int n = 0;
        Gen.Select(Gen.Int[0, 1_000_000], Gen.Int[0, 30], Gen.Int[0, kinds.Length - 1]).Sample((seed, records, kind) =>
        {
            var w = Write(seed, records, $"prop{Interlocked.Increment(ref n)}", kinds[kind]);
            using var r = ImageReader.Open(w.Path, key: Key256);
            r.Verify(decode: true);
            AssertSame(w, r);
            File.Delete(w.Path);
        }, iter: 150, threads: 1);
    }

    [Fact]
    public void PlainImages_HavePageAlignedPayloads()
    {
        var w = Write(4, 50);
        using var r = ImageReader.Open(w.Path);
        foreach (var entry in r.Index)
            Assert.Equal(0, (entry.FileOffset + ImageFormat.RecordHeaderSize) % Page);
    }

    [Fact]
    public void ZeroRecords_CostNothing_AndCompressibleRecordsShrink()
    {
        var w = Write(5, 60, kind: new Kind(Codec.Lz4));
        using var r = ImageReader.Open(w.Path);
        for (int i = 0; i < w.Records.Count; i++)
        {
            var data = w.Records[i].Data;
            if (!data.AsSpan().ContainsAnyExcept((byte)0))
                Assert.Equal(0, r.Index[i].StoredLength);
            else
                Assert.True(r.Index[i].StoredLength <= data.Length);
        }
    }

    [Fact]
    public void SystemLibrariesAndManagedPorts_ReadEachOthersData()
    {
        var random = new Random(6);
        var data = new byte[64 * Page];
        for (int i = 0; i < data.Length; i += 16)
            data[i] = (byte)random.Next(8);
        foreach (var codec in new[] { Codec.Lz4, Codec.Zstd })
        {
            var packed = new byte[data.Length];
            int n = Compression.Compress(codec, data, packed);
            var back = new byte[data.Length];
            Assert.True(n > 0 && Compression.ManagedDecompress(codec, packed.AsSpan(0, n), back));
            Assert.Equal(data, back);
            n = Compression.ManagedCompress(codec, data, packed);
            Array.Clear(back);
            Assert.True(n > 0 && Compression.Decompress(codec, packed.AsSpan(0, n), back));
            Assert.Equal(data, back);
            // Not decodable to the expected length: refused, no exception.
            Assert.False(Compression.Decompress(codec, packed.AsSpan(0, n), new byte[data.Length - 1]));
        }
    }

    private static ImageFormatException Refused(string path, byte[]? key = null, bool decode = false)
    {
        return Assert.Throws<ImageFormatException>(() =>
        {
            using var r = ImageReader.Open(path, key: key);
            r.Verify(decode: decode);
        });
    }

    /// <summary>Takes every batch of a stream on three threads, checks and decodes it; returns the records by number.</summary>
    private static Dictionary<int, (ulong Address, byte[] Data)> Drain(ImageReader r, BatchStream stream)
    {
        var records = new System.Collections.Concurrent.ConcurrentDictionary<int, (ulong, byte[])>();
        var failures = new System.Collections.Concurrent.ConcurrentQueue<Exception>();
        var threads = Enumerable.Range(0, 3).Select(_ => new Thread(() =>
        {
            using var decoder = r.CreateDecoder();
            while (true)
            {
                FilledBatch filled;
                try
                {
                    if (!stream.TryTake(out filled))
                        return;
                }
                catch (ImageFormatException e)
                {
                    failures.Enqueue(e);
                    return;
                }
                var batch = filled.Batch;
                var headers = r.CheckBatch(batch, filled.Data);
                for (int i = batch.First; i < batch.First + batch.Count; i++)
                {
                    var pages = new byte[r.Index[i].Length];
                    r.Decode(batch, filled.Data, headers, i, decoder, pages);
                    Assert.True(records.TryAdd(i, (r.Index[i].Address, pages)), $"record {i} came twice");
                }
                stream.Return(filled);
            }
        })).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());
        if (failures.TryDequeue(out var first))
            throw first;
        return new Dictionary<int, (ulong, byte[])>(records);
    }

    [Theory]
    [InlineData(false, false, 2)]
    [InlineData(false, true, 2)]
    [InlineData(true, false, 2)]
    [InlineData(true, true, 2)]
    [InlineData(false, false, 1)]
    [InlineData(true, false, 4)] // more readers than buffers: as many as there are buffers
    public void BatchStream_GivesEveryRecordOnce_ReadDirectlyOrThroughTheCache(bool packed, bool keepCache, int readers)
    {
        var w = Write(21, 60, kind: packed ? Lz4Encrypted : Plain);
        using var r = ImageReader.Open(w.Path, key: Key256);
        // Small batches, so that the readers and the takers overlap over many of them.
        using var stream = new BatchStream(r, 6 * Page, 8 * Page, 3, keepCache, readers: readers);
        using (var probe = Linux.FileOps.OpenDirect(w.Path, write: false))
            Assert.Equal(!keepCache && probe is not null, stream.Direct);
        var records = Drain(r, stream);
        Assert.Equal(w.Records.Count, records.Count);
        for (int i = 0; i < w.Records.Count; i++)
        {
            Assert.Equal(w.Records[i].Address, records[i].Address);
            Assert.Equal(w.Records[i].Data, records[i].Data);
        }
        Assert.False(stream.TryTake(out _));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void BatchStream_WithWantedRecords_ReadsOnlyThoseRuns(bool packed)
    {
        // A lazy restore's fill wants only what no fault brought back: every third record is
        // left out, so the planned batches are read as runs of one or two records.
        var w = Write(packed ? 25 : 24, 60, kind: packed ? Lz4Encrypted : Plain);
        using var r = ImageReader.Open(w.Path, key: Key256);
        using var stream = new BatchStream(r, 6 * Page, 8 * Page, 3, keepCache: false, wanted: i => i % 3 != 1);
        var records = Drain(r, stream);
        var expected = Enumerable.Range(0, w.Records.Count).Where(i => i % 3 != 1).ToList();
        Assert.Equal(expected, records.Keys.Order());
        foreach (int i in expected)
            Assert.Equal(w.Records[i].Data, records[i].Data);
    }

    [Fact]
    public void BatchStream_OfAnImageTruncatedAfterItWasOpened_FailsItsTakers()
    {
        foreach (var kind in new[] { Plain, Lz4Encrypted })
        {
            var w = Write(kind == Plain ? 22 : 23, 60, kind: kind);
            using var r = ImageReader.Open(w.Path, key: Key256);
            FileOpsTruncate(w.Path, r.Index[30].FileOffset + 100);
            using var stream = new BatchStream(r, 6 * Page, 8 * Page, 3, keepCache: false);
            var e = Assert.Throws<ImageFormatException>(() => Drain(r, stream));
            Assert.Contains("truncated: unexpected end of file in page records", e.Message);
        }
    }

    [Fact]
    public void PlainRecordsWrittenOnOtherThreadsWhileMoreAreReserved_AllHaveTheirChecksumsInTheIndex()
    {
        // A checkpoint reserves records on its reading thread while writer threads write earlier
        // ones: every checksum must reach the index (a lost one made a 30,000-record image unusable).
        const int Records = 20000;
        string path = Path.Combine(_dir, "threads.img");
        var header = new ImageHeader(1234, Page, 62, ImageFlags.Digest, 42, DateTimeOffset.UnixEpoch);
        var page = new byte[Page];
        page[7] = 7;
        ulong checksum = ImageWriter.Checksum(page, 42);
        using (var file = File.OpenHandle(path, FileMode.CreateNew, FileAccess.ReadWrite))
        using (var w = new ImageWriter(file, path, header))
        {
            w.WriteVmaTable([new ImageVma(0x10000000, 0x10000000 + 2 * Records * Page, 3, VmaKind.Anonymous, 0, Records * Page)]);
            using var slots = new System.Collections.Concurrent.BlockingCollection<PageSlot>();
            var writers = Enumerable.Range(0, 2).Select(_ => new Thread(() =>
            {
                foreach (var slot in slots.GetConsumingEnumerable())
                    w.WritePages(slot, page, checksum);
            })).ToList();
            writers.ForEach(t => t.Start());
            for (int i = 0; i < Records; i++)
                slots.Add(w.ReservePages(0x10000000 + (ulong)i * 2 * Page, Page));
            slots.CompleteAdding();
            writers.ForEach(t => t.Join());
            w.Finish();
        }
        using var r = ImageReader.Open(path);
        Assert.All(r.Index, e => Assert.Equal(checksum, e.ContentChecksum));
        r.Verify();
    }

    [Fact]
    public void TruncatedImage_IsRefusedAtEveryLength()
    {
        foreach (var kind in new[] { Plain, Lz4Encrypted })
        {
            var w = Write(7, 3, kind.ToString().GetHashCode(StringComparison.Ordinal).ToString("x", System.Globalization.CultureInfo.InvariantCulture), kind);
            var bytes = File.ReadAllBytes(w.Path);
            string cut = Path.Combine(_dir, "cut.img");
            for (int len = 0; len < bytes.Length; len += 37)
            {
                File.WriteAllBytes(cut, bytes[..len]);
                var e = Refused(cut, Key256);
                Assert.Contains("truncated", e.Message);
            }
        }
    }

    [Fact]
    public void EveryFlippedBit_IsDetected_BeforeAnyPageIsDecoded()
    {
        foreach (var kind in new[] { Plain, Lz4Encrypted, new Kind(Codec.Zstd) })
        {
            var w = Write(8, 4, kind.ToString().GetHashCode(StringComparison.Ordinal).ToString("x", System.Globalization.CultureInfo.InvariantCulture), kind);
            var bytes = File.ReadAllBytes(w.Path);
            string bad = Path.Combine(_dir, "bad.img");
            var random = new Random(8);
            for (int i = 0; i < 400; i++)
            {
                var copy = (byte[])bytes.Clone();
                int bit = random.Next(copy.Length * 8);
                copy[bit / 8] ^= (byte)(1 << (bit % 8));
                File.WriteAllBytes(bad, copy);
                // Without decoding: the checks that run before restore writes a single page.
                Refused(bad, Key256);
            }
        }
    }

    [Theory]
    [InlineData("file header", 0)]
    [InlineData("record header", 1)]
    [InlineData("payload", 2)]
    public void OneFlippedBit_InEachPart_IsNamed(string part, int where)
    {
        var w = Write(9, 4, kind: Lz4Encrypted);
        long offset;
        using (var r = ImageReader.Open(w.Path, key: Key256))
        {
            offset = where switch
            {
                0 => 24, // pid
                1 => r.Index[2].FileOffset + 8, // address
                _ => r.Index[2].FileOffset + ImageFormat.RecordHeaderSize + 3,
            };
        }
        Flip(w.Path, offset);
        var e = Refused(w.Path, Key256);
        Assert.Contains(where switch
        {
            0 => "header checksum mismatch",
            1 => "record header checksum mismatch",
            _ => $"checksum mismatch in page record 2 (pages 0x{w.Records[2].Address:x}",
        }, e.Message);
        Assert.NotNull(part);
    }

    private static void Flip(string path, long offset)
    {
        using var f = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite);
        var one = new byte[1];
        RandomAccess.Read(f, one, offset);
        one[0] ^= 0x40;
        RandomAccess.Write(f, one, offset);
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
    public void WrongKey_IsRefusedAtOpen_AndNoKeyCannotDecode()
    {
        var w = Write(14, 3, kind: Lz4Encrypted);
        var wrong = (byte[])Key256.Clone();
        wrong[31] ^= 1;
        var e = Assert.Throws<ImageFormatException>(() => ImageReader.Open(w.Path, key: wrong).Dispose());
        Assert.Contains("wrong key", e.Message);
        e = Assert.Throws<ImageFormatException>(() => ImageReader.Open(w.Path, key: Key256[..16]).Dispose());
        Assert.Contains("wrong key", e.Message);
        using var r = ImageReader.Open(w.Path);
        r.Verify(); // structure and checksums need no key
        e = Assert.Throws<ImageFormatException>(() => r.Verify(decode: true));
        Assert.Contains("without the key", e.Message);
    }

    [Fact]
    public void ContentChecksumMismatch_NamesTheRecordAndAddress_AndBreaksTheDigest()
    {
        var w = Write(15, 5, kind: new Kind(Codec.Zstd, Digest: true),
            tamper: h => h.Sequence == 3 ? h with { ContentChecksum = h.ContentChecksum ^ 1 } : h);
        using (var r = ImageReader.Open(w.Path))
        {
            // The writer's index and digest cover the checksums it was given; the pages disagree.
            r.Verify(); // index, digest and headers consistent as written
            var e = Assert.Throws<ImageFormatException>(() => r.Verify(decode: true));
            Assert.Contains($"content checksum mismatch in page record 2 (pages 0x{w.Records[2].Address:x}", e.Message);
        }
        // Re-seal record 2's header with yet another content checksum: it no longer agrees with the index.
        var bytes = File.ReadAllBytes(w.Path);
        long at, indexAt;
        using (var r = ImageReader.Open(w.Path))
        {
            at = r.Index[2].FileOffset;
            indexAt = BinaryPrimitives.ReadInt64LittleEndian(bytes.AsSpan(bytes.Length - ImageFormat.EndPayloadSize));
        }
        var head = bytes.AsSpan((int)at, ImageFormat.RecordHeaderSize);
        BinaryPrimitives.WriteUInt64LittleEndian(head[40..], 12345);
        BinaryPrimitives.WriteUInt64LittleEndian(head[56..], ImageFormat.Hash(head[..56], w.ImageId));
        File.WriteAllBytes(w.Path, bytes);
        Assert.Contains("page record 2 (pages 0x", Refused(w.Path).Message);
        Assert.Contains("has content checksum 0000000000003039, the index says", Refused(w.Path).Message);

        // Make the index agree with it (and re-seal the index record): now the digest, checked when
        // the image is opened, before any page is read, no longer matches.
        var indexHead = bytes.AsSpan((int)indexAt, ImageFormat.RecordHeaderSize);
        int indexLength = BinaryPrimitives.ReadInt32LittleEndian(indexHead[20..]);
        var index = bytes.AsSpan((int)indexAt + ImageFormat.RecordHeaderSize, indexLength);
        BinaryPrimitives.WriteUInt64LittleEndian(index[(2 * ImageFormat.IndexEntrySize + 24)..], 12345);
        ulong sum = ImageFormat.Hash(index, w.ImageId);
        BinaryPrimitives.WriteUInt64LittleEndian(indexHead[32..], sum);
        BinaryPrimitives.WriteUInt64LittleEndian(indexHead[40..], sum);
        BinaryPrimitives.WriteUInt64LittleEndian(indexHead[56..], ImageFormat.Hash(indexHead[..56], w.ImageId));
        File.WriteAllBytes(w.Path, bytes);
        var opened = Assert.Throws<ImageFormatException>(() => ImageReader.Open(w.Path).Dispose());
        Assert.Contains("whole-image digest mismatch", opened.Message);
    }

    [Fact]
    public void ForeignFile_NewerVersion_AndBadPageSize_AreRefused()
    {
        string foreign = Path.Combine(_dir, "foreign.img");
        File.WriteAllBytes(foreign, new byte[4096]);
        Assert.Contains("not a memcr image", Refused(foreign).Message);

        var w = Write(12, 1);
        var bytes = File.ReadAllBytes(w.Path);
        BinaryPrimitives.WriteUInt16LittleEndian(bytes.AsSpan(8), ImageFormat.Version + 1);
        File.WriteAllBytes(w.Path, bytes);
        Assert.Contains($"format version {ImageFormat.Version + 1} is not supported: the image is from a newer memcr", Refused(w.Path).Message);

        bytes = File.ReadAllBytes(Write(16, 1).Path);
        BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(16), 3000);
        BinaryPrimitives.WriteUInt64LittleEndian(bytes.AsSpan(120), ImageFormat.Hash(bytes.AsSpan(0, 120), 0));
        File.WriteAllBytes(w.Path, bytes);
        Assert.Contains("page size 3000", Refused(w.Path).Message);
    }

    [Fact]
    public void RandomMutations_NeverCrashHangOrAllocateHugely()
    {
        foreach (var kind in new[] { Plain, Lz4Encrypted, new Kind(Codec.Zstd, Digest: true) })
        {
            var w = Write(13, 6, kind.ToString().GetHashCode(StringComparison.Ordinal).ToString("x", System.Globalization.CultureInfo.InvariantCulture), kind);
            var bytes = File.ReadAllBytes(w.Path);
            string bad = Path.Combine(_dir, "fuzz.img");
            var random = new Random(13);
            long allocated = GC.GetTotalAllocatedBytes();
            for (int i = 0; i < 3000; i++)
            {
                var copy = (byte[])bytes.Clone();
                int edits = random.Next(1, 8);
                for (int e = 0; e < edits; e++)
                    copy[random.Next(copy.Length)] = (byte)random.Next(256);
                int length = random.Next(10) == 0 ? random.Next(copy.Length) : copy.Length;
                File.WriteAllBytes(bad, copy[..length]);
                try
                {
                    using var r = ImageReader.Open(bad, key: Key256);
                    r.Verify(decode: true);
                }
                catch (ImageFormatException)
                {
                }
            }
            // Nothing close to a record's 64 MiB limit per attempt: no length field is trusted blindly.
            Assert.True(GC.GetTotalAllocatedBytes() - allocated < 3000L * 4 * bytes.Length + (512L << 20));
        }
    }
}
