using Memcr.CriuImages.Explore;
using Memcr.CriuImages.Pages;

namespace Memcr.CriuImages.Tests;

/// <summary>pagemap-PID.img and pages-N.img, written and read through the library.</summary>
public sealed class PagesTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("memcr-pages-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static byte[] Pattern(int pages, int seed)
    {
        var b = new byte[pages * PageMap.PageSize];
        new Random(seed).NextBytes(b);
        return b;
    }

    [Fact]
    public void WrittenPages_ReadBackByAddressAndInOrder()
    {
        var a = Pattern(3, 1);
        var b = Pattern(5, 2);
        using (var w = new PageImageWriter(_dir, 42, 1))
        {
            w.Add(0x10000, a, PageFlags.Lazy);
            w.AddInParent(0x20000, 2);
            w.Add(0x7f0000000000, b);
        }
        var map = PageMap.Read(_dir, 42);
        Assert.Equal(1u, map.PagesId);
        Assert.Equal(
            [new PageRun(0x10000, 3, PageFlags.Lazy | PageFlags.Present, 0), new PageRun(0x20000, 2, PageFlags.Parent, -1), new PageRun(0x7f0000000000, 5, PageFlags.Present, 3 * 4096)],
            map.Runs);
        using var reader = PagesReader.Open(_dir, map);
        var one = new byte[100];
        Assert.True(reader.TryRead(0x7f0000000000 + 4096 + 7, one));
        Assert.Equal(b.AsSpan(4096 + 7, 100).ToArray(), one);
        Assert.False(reader.TryRead(0x20000, one));
        var all = new List<byte>();
        reader.ReadAll((_, bytes) => all.AddRange(bytes.ToArray()));
        Assert.Equal([.. a, .. b], all);
    }

    [Fact]
    public void PagesFileOfTheWrongSize_IsRefused()
    {
        using (var w = new PageImageWriter(_dir, 7, 1))
            w.Add(0x10000, Pattern(2, 3));
        File.AppendAllText(Path.Combine(_dir, "pages-1.img"), "x");
        var map = PageMap.Read(_dir, 7);
        var e = Assert.Throws<CriuImageException>(() => PagesReader.Open(_dir, map));
        Assert.Contains("8193 bytes, but pagemap-7.img lists 8192 bytes of pages in it", e.Message);
    }

    [Fact]
    public void RunsOutOfOrder_AreRefusedByTheWriter()
    {
        using var w = new PageImageWriter(_dir, 9, 1);
        w.Add(0x20000, Pattern(1, 4));
        Assert.Throws<ArgumentException>(() => w.Add(0x10000, Pattern(1, 5)));
    }

    [Fact]
    public void Verify_FindsWhatIsMissingOrInconsistent()
    {
        foreach (var f in Directory.GetFiles(Fixtures.Images("tree")))
            File.Copy(f, Path.Combine(_dir, Path.GetFileName(f)));
        File.Delete(Path.Combine(_dir, "core-21934.img"));
        File.Delete(Path.Combine(_dir, "fs-21932.img"));
        using (var pages = File.OpenWrite(Path.Combine(_dir, "pages-2.img")))
            pages.SetLength(pages.Length - 4096);
        var bytes = File.ReadAllBytes(Path.Combine(_dir, "ids-21930.img"));
        File.WriteAllBytes(Path.Combine(_dir, "ids-21930.img"), bytes[..^2]);
        var problems = new DumpVerifier(new DumpDirectory(_dir)).Check();
        Assert.Contains(problems, p => p.Contains("ids-21930.img: offset 8: truncated", StringComparison.Ordinal));
        Assert.Contains(problems, p => p.EndsWith("core-21934.img: missing (or unreadable) for thread 21934 of pid 21930", StringComparison.Ordinal));
        Assert.Contains(problems, p => p.EndsWith("fs-21932.img: missing (or unreadable) for pid 21932", StringComparison.Ordinal));
        Assert.Contains(problems, p => p.Contains("pages-2.img: ", StringComparison.Ordinal) && p.Contains("but pagemap-21932.img list", StringComparison.Ordinal));
        Assert.Equal(5, problems.Count);
    }
}
