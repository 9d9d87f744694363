using System.Buffers.Binary;
using System.Text.Json;
using Memcr.CriuImages.Json;

namespace Memcr.CriuImages.Tests;

/// <summary>Each kind of bad input gets one clear error naming the file, where, and why.</summary>
public sealed class ErrorTests
{
    private static string Pstree => Path.Combine(Fixtures.Images("tree"), "pstree.img");

    private static CriuImageException Refused(byte[] bytes, string name = "bad.img")
    {
        return Assert.Throws<CriuImageException>(() =>
        {
            using var reader = CriuImageReader.Open(new MemoryStream(bytes), name);
            CritJson.Decode(reader, TextWriter.Null, pretty: true);
        });
    }

    private static byte[] Image(uint magic, params byte[][] entries)
    {
        using var o = new MemoryStream();
        var w = new byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(w, ImageMagic.Common);
        o.Write(w);
        BinaryPrimitives.WriteUInt32LittleEndian(w, magic);
        o.Write(w);
        foreach (var e in entries)
            o.Write(e);
        return o.ToArray();
    }

    private static byte[] Entry(int length, params byte[] body)
    {
        var b = new byte[4 + body.Length];
        BinaryPrimitives.WriteInt32LittleEndian(b, length);
        body.CopyTo(b, 4);
        return b;
    }

    [Fact]
    public void EmptyFile_IsRefused() =>
        Assert.Equal("bad.img: offset 0: empty file: no magic", Refused([]).Message);

    [Fact]
    public void WrongMagic_IsRefusedWithTheMagic()
    {
        var e = Refused(Image(0x12345678));
        Assert.Equal(4, e.Offset);
        Assert.Contains("unknown magic 0x12345678", e.Message);
    }

    [Fact]
    public void RawPagesFile_IsRefusedAsRawData()
    {
        var bytes = File.ReadAllBytes(Path.Combine(Fixtures.Images("tree"), "pages-1.img"))[..4096];
        var e = Refused(bytes, "pages-1.img");
        Assert.StartsWith("pages-1.img: offset 0: unknown magic 0x", e.Message, StringComparison.Ordinal);
        Assert.Contains("raw data such as pages-N.img has no magic", e.Message);
    }

    [Fact]
    public void TruncatedEntry_IsRefusedWithItsOffset()
    {
        var bytes = File.ReadAllBytes(Pstree);
        var e = Refused(bytes[..^3]);
        Assert.Contains("truncated", e.Message);
        Assert.NotNull(e.Offset);
    }

    [Fact]
    public void EntryLengthPastTheEnd_IsRefused()
    {
        var e = Refused(Image(ImageKinds.Pstree.Magic, Entry(1000, 8, 1)));
        Assert.Equal("bad.img: offset 8: truncated: the pstree_entry message of 1000 bytes run past the end of the file (2 bytes left at offset 12)", e.Message);
    }

    [Fact]
    public void NegativeEntryLength_IsRefused() =>
        Assert.Contains("entry length -5 is negative", Refused(Image(ImageKinds.Pstree.Magic, Entry(-5))).Message);

    [Fact]
    public void MessageThatDoesNotParse_IsRefused()
    {
        // Field 1 as a length-delimited field of 100 bytes, in a 3-byte message.
        var e = Refused(Image(ImageKinds.Pstree.Magic, Entry(3, 0x0a, 100, 0)));
        Assert.StartsWith("bad.img: offset 12: pstree_entry message of 3 bytes does not parse", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void HugeLengthOnAPipe_CostsOnlyWhatArrives()
    {
        var bytes = Image(ImageKinds.Pstree.Magic, Entry(int.MaxValue, new byte[100]));
        long before = GC.GetAllocatedBytesForCurrentThread();
        var e = Assert.Throws<CriuImageException>(() =>
        {
            using var reader = CriuImageReader.Open(new UnseekableStream(bytes), "stdin");
            reader.ReadRaw();
        });
        Assert.Contains("end after 100 bytes", e.Message);
        Assert.True(GC.GetAllocatedBytesForCurrentThread() - before < 8 << 20);
    }

    [Fact]
    public void ImageOfAnotherKind_IsRefusedWhenAKindIsExpected()
    {
        var e = Assert.Throws<CriuImageException>(() => CriuImageReader.Open(Pstree, ImageKinds.Core));
        Assert.Equal($"{Pstree}: offset 0: a PSTREE image where a CORE image was expected", e.Message);
    }

    private static CriuImageException EncodeRefused(string json)
    {
        using var doc = JsonDocument.Parse(json);
        return Assert.Throws<CriuImageException>(() => CritJson.Encode(doc.RootElement, Stream.Null, "in.json"));
    }

    private const string Entry0 = """{"pid": 1, "ppid": 0, "pgid": 1, "sid": 1""";

    [Theory]
    [InlineData($$"""{"magic": "PSTREE", "entries": [{{Entry0}}, "bogus": 3}]}""", "in.json: $.entries[0]: unknown field 'bogus': pstree_entry has pid, ppid, pgid, sid, threads")]
    [InlineData("""{"magic": "PSTREE", "entries": [{"pid": "abc", "ppid": 0, "pgid": 1, "sid": 1}]}""", "in.json: $.entries[0].pid: 'abc' is not a number")]
    [InlineData("""{"magic": "PSTREE", "entries": [{"pid": -1, "ppid": 0, "pgid": 1, "sid": 1}]}""", "in.json: $.entries[0].pid: -1 is out of range for uint32 (0..4294967295)")]
    [InlineData("""{"magic": "PSTREE", "entries": [{"pid": 1.5, "ppid": 0, "pgid": 1, "sid": 1}]}""", "in.json: $.entries[0].pid: 1.5 is not a whole number")]
    [InlineData("""{"magic": "PSTREE", "entries": [{"pid": 1, "ppid": 0, "pgid": 1}]}""", "in.json: $.entries[0]: pstree_entry is missing required field sid")]
    [InlineData($$"""{"magic": "PSTREE", "entries": [{{Entry0}}, "threads": 5}]}""", "in.json: $.entries[0].threads: a repeated field must be a JSON array, not the number 5")]
    [InlineData("""{"magic": "NOPE", "entries": []}""", "in.json: $.magic: unknown image kind 'NOPE'")]
    [InlineData("""{"magic": "PSTREE"}""", "in.json: $.entries: missing, or not an array")]
    [InlineData("""{"magic": "PSTREE", "entries": [], "x": 1}""", "in.json: $: unknown key 'x': an image has \"magic\" and \"entries\"")]
    [InlineData("""{"magic": "FDINFO", "entries": [{"id": 1, "flags": 0, "type": "SOCKET", "fd": 0}]}""", "in.json: $.entries[0].type: \"SOCKET\" is not a value of fd_types (UND, REG, PIPE, FIFO, INETSK, UNIXSK, EVENTFD, EVENTPOLL, INOTIFY, SIGNALFD, PACKETSK, TTY, FANOTIFY, NETLINKSK, NS, TUNF, EXT, TIMERFD, MEMFD, BPFMAP, PIDFD, CTL_TTY, AUTOFS_PIPE)")]
    [InlineData("""{"magic": "PIPES_DATA", "entries": [{"pipe_id": 1, "bytes": 3, "extra": "YWI=\n"}]}""", "in.json: $.entries[0].extra: 2 bytes where the entry declares 3")]
    [InlineData("""{"magic": "PIPES_DATA", "entries": [{"pipe_id": 1, "bytes": 3}]}""", "in.json: $.entries[0].extra: missing: the entry declares data after it")]
    [InlineData("""{"magic": "PSTREE", "entries": [{"pid": 1, "ppid": 0, "pgid": 1, "sid": 1, "extra": "AA=="}]}""", "in.json: $.entries[0].extra: PSTREE entries have no extra payload")]
    public void BadJson_IsRefusedWithItsPath(string json, string message) => Assert.Equal(message, EncodeRefused(json).Message);

    [Fact]
    public void UnknownFlag_IsRefusedWithTheFlagNames()
    {
        string json = File.ReadAllText(Fixtures.CritJsonOf("tree", "mm-21930.img"))
            .Replace("\"prot\": \"PROT_READ\"", "\"prot\": \"PROT_READ | PROT_FLY\"", StringComparison.Ordinal);
        var e = EncodeRefused(json);
        Assert.Equal("in.json: $.entries[0].vmas[0].prot: 'PROT_FLY' is not a flag of mmap.prot (PROT_READ, PROT_WRITE, PROT_EXEC) nor a number", e.Message);
    }

    /// <summary>A stream that cannot seek: stdin from a pipe.</summary>
    private sealed class UnseekableStream(byte[] data) : MemoryStream(data)
    {
        public override bool CanSeek => false;

        public override long Length => throw new NotSupportedException();
    }
}
