using System.Text;
using System.Text.Json;
using Memcr.CriuImages.Explore;
using Memcr.CriuImages.Json;

namespace Memcr.CriuImages.Tests;

/// <summary>Every CRIU 4.2 fixture image, against what crit 4.2 printed for it.</summary>
public sealed class FixtureTests
{
    public static TheoryData<string, string> Images => Fixtures.AllImages();

    private static string Decode(string path, bool pretty, bool noPayload = false)
    {
        using var reader = CriuImageReader.Open(path);
        var text = new StringWriter { NewLine = "\n" };
        CritJson.Decode(reader, text, pretty, noPayload);
        return text.ToString();
    }

    private static byte[] Encode(string json, string name = "test.json")
    {
        using var doc = JsonDocument.Parse(json);
        using var output = new MemoryStream();
        CritJson.Encode(doc.RootElement, output, name);
        return output.ToArray();
    }

    [Theory]
    [MemberData(nameof(Images))]
    public void Decode_PrintsWhatCritPrints(string scenario, string image)
    {
        string expected = File.ReadAllText(Fixtures.CritJsonOf(scenario, image));
        Assert.Equal(expected, Decode(Path.Combine(Fixtures.Images(scenario), image), pretty: true));
    }

    [Theory]
    [MemberData(nameof(Images))]
    public void EncodeOfCritsJson_GivesTheImageByteForByte(string scenario, string image)
    {
        var bytes = Encode(File.ReadAllText(Fixtures.CritJsonOf(scenario, image)));
        Assert.Equal(File.ReadAllBytes(Path.Combine(Fixtures.Images(scenario), image)), bytes);
    }

    [Theory]
    [MemberData(nameof(Images))]
    public void PlainJson_RoundTripsByteForByte(string scenario, string image)
    {
        string path = Path.Combine(Fixtures.Images(scenario), image);
        string plain = Decode(path, pretty: false);
        Assert.DoesNotContain("\n", plain.Replace("\\n", "", StringComparison.Ordinal), StringComparison.Ordinal);
        Assert.Equal(File.ReadAllBytes(path), Encode(plain));
    }

    [Theory]
    [MemberData(nameof(Images))]
    public void RawEntries_WrittenBack_GiveTheSameBytes(string scenario, string image)
    {
        string path = Path.Combine(Fixtures.Images(scenario), image);
        using var reader = CriuImageReader.Open(path);
        using var output = new MemoryStream();
        using (var writer = new CriuImageWriter(output, reader.Kind, "copy", leaveOpen: true))
        {
            foreach (var e in reader.ReadAllRaw())
                writer.WriteRaw(e);
        }
        Assert.Equal(File.ReadAllBytes(path), output.ToArray());
    }

    [Theory]
    [MemberData(nameof(Images))]
    public void TypedMessages_Reserialised_GiveTheSameBytes(string scenario, string image)
    {
        string path = Path.Combine(Fixtures.Images(scenario), image);
        using var reader = CriuImageReader.Open(path);
        using var output = new MemoryStream();
        using (var writer = new CriuImageWriter(output, reader.Kind, "copy", leaveOpen: true))
        {
            foreach (var e in reader.ReadAllRaw())
                writer.Write(e.Message, e.Extra);
        }
        Assert.Equal(File.ReadAllBytes(path), output.ToArray());
    }

    public static TheoryData<string, string> Views()
    {
        var data = new TheoryData<string, string>();
        foreach (var s in Fixtures.Scenarios)
        {
            foreach (var v in DumpExplorer.Views)
                data.Add(s, v);
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(Views))]
    public void Explore_PrintsWhatCritXPrints(string scenario, string view)
    {
        var output = new StringWriter { NewLine = "\n" };
        new DumpExplorer(new DumpDirectory(Fixtures.Images(scenario)), output).Show(view);
        Assert.Equal(File.ReadAllText(Path.Combine(Fixtures.Crit(scenario), $"x-{view}.txt")), output.ToString());
    }

    [Theory]
    [InlineData("counter-shelljob")]
    [InlineData("count-sh")]
    [InlineData("tree")]
    [InlineData("http-tcp")]
    public void EveryFixtureDump_Verifies(string scenario)
    {
        Assert.Empty(new DumpVerifier(new DumpDirectory(Fixtures.Images(scenario))).Check());
    }

    [Fact]
    public void Show_WithoutPayloads_SizesThem()
    {
        string json = Decode(Path.Combine(Fixtures.Images("tree"), "pipes-data.img"), pretty: true, noPayload: true);
        Assert.Contains("\"extra\": \"... <15B>\"", json);
    }

    [Fact]
    public void Stats_ShowTheFrozenTimeAndTheImageSizes()
    {
        var output = new StringWriter { NewLine = "\n" };
        new DumpStats(new DumpDirectory(Fixtures.Images("tree"))).Show(output);
        string text = output.ToString();
        Assert.Contains("frozen time             12.947 ms", text);
        Assert.Contains("pages written           4161 (16.3 MiB)", text);
        Assert.Contains("page data               16.3 MiB in 2 pages-N.img", text);
    }

    [Fact]
    public void TypedReading_GivesTheProcessTree()
    {
        var dir = new DumpDirectory(Fixtures.Images("tree"));
        var root = dir.Tree[0];
        Assert.Equal([21930u, 21933u, 21934u, 21935u], root.Threads);
        var core = dir.One<core_entry>(ImageKinds.Core, root.Pid);
        Assert.Equal(core_entry.Types.march.X8664, core.Mtype);
        Assert.Equal("tree", core.Tc.Comm);
        Assert.Equal(0x7f2c39adfa10UL, core.ThreadInfo.ClearTidAddr);
        using var pipes = CriuImageReader.Open(Path.Combine(Fixtures.Images("tree"), "pipes-data.img"), ImageKinds.PipesData);
        var data = pipes.ReadRaw()!;
        Assert.Equal("queued-in-pipe\n", Encoding.ASCII.GetString(data.Extra));
    }
}
