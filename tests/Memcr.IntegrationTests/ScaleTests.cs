using System.Globalization;
using System.Text.RegularExpressions;
using Memcr.IntegrationTests.Harness;

namespace Memcr.IntegrationTests;

/// <summary>memcr mode on processes with tens of thousands of mappings and thousands of threads.</summary>
public sealed partial class ScaleTests
{
    /// <summary>Starts tests/targets/manyvmas.c: MB MiB with every other page read-only (or unmapped), and THREADS threads.</summary>
    private static FifoTarget StartManyVmas(int mb, int threads = 0, bool sparse = false)
    {
        string exe = Gcc.Build("manyvmas");
        return FifoTarget.Start("manyvmas", dir => sparse
            ? [exe, dir, mb.ToString(CultureInfo.InvariantCulture), threads.ToString(CultureInfo.InvariantCulture), "sparse"]
            : [exe, dir, mb.ToString(CultureInfo.InvariantCulture), threads.ToString(CultureInfo.InvariantCulture)]);
    }

    [GeneratedRegex(@"image (\d+) kB: (\d+) kB of pages")]
    private static partial Regex ImageLine();

    /// <summary>Checkpoints and restores the target with the prompt; returns memcr's output.</summary>
    private static string CheckpointAndRestore(FifoTarget target, string name, out long imageKb, out long pagesKb)
    {
        string dir = Repo.NewScratchDir(name);
        string mapsBefore = target.Maps;
        using var memcr = MemcrProcess.Start("-p", target.Pid.ToString(CultureInfo.InvariantCulture), "-d", dir);
        memcr.WaitForPrompt();
        Assert.Equal(mapsBefore, target.Maps);
        Assert.True(target.Status.RssAnonKb < 4096, $"RssAnon while checkpointed: {target.Status.RssAnonKb} kB");
        memcr.PressEnter();
        Assert.True(memcr.WaitForExit() == 0, memcr.Output);
        Assert.Equal(mapsBefore, target.Maps);
        target.AssertIntact();
        var m = ImageLine().Match(memcr.Output);
        Assert.True(m.Success, memcr.Output);
        imageKb = long.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
        pagesKb = long.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture);
        Directory.Delete(dir, recursive: true);
        return memcr.Output;
    }

    [Fact]
    public void SixtyThousandVmas_ComeBackIntact_InAnImageTheSizeOfTheirData_WithASummaryLine()
    {
        using var target = StartManyVmas(240);
        Assert.True(target.Maps.Split('\n').Length > 60_000, "the target should have over 60,000 VMAs");
        string output = CheckpointAndRestore(target, "manyvmas", out long imageKb, out long pagesKb);
        Assert.True(pagesKb >= 240 * 1024, $"{pagesKb} kB of pages saved");
        // Records span the adjacent VMAs: no record and padding page per one-page VMA.
        Assert.True(imageKb <= pagesKb * 102 / 100, $"image {imageKb} kB for {pagesKb} kB of pages");
        // One summary line for the VMAs, not a line each.
        Assert.True(output.Split('\n').Length < 100, $"{output.Split('\n').Length} lines of output");
        Assert.Contains("VMAs with pages to save", output);
    }

    [Fact]
    public void ThirtyThousandVmasWithGapsBetweenThem_ComeBackIntact()
    {
        using var target = StartManyVmas(240, sparse: true);
        Assert.True(target.Maps.Split('\n').Length > 30_000, "the target should have over 30,000 VMAs");
        CheckpointAndRestore(target, "sparsevmas", out _, out long pagesKb);
        Assert.True(pagesKb >= 120 * 1024, $"{pagesKb} kB of pages saved");
    }

    [Fact]
    public void FiveHundredThreadsAndSixtyThousandVmas_ComeBackIntact()
    {
        using var target = StartManyVmas(240, threads: 500);
        Assert.Equal(501, Directory.GetDirectories($"/proc/{target.Pid}/task").Length);
        CheckpointAndRestore(target, "threadsvmas", out _, out _);
        Assert.Equal("500", target.AssertIntact()["threads"]);
    }

    [Fact]
    public void TwoThousandThreads_ComeBackIntact()
    {
        using var target = StartManyVmas(16, threads: 2000);
        Assert.Equal(2001, Directory.GetDirectories($"/proc/{target.Pid}/task").Length);
        CheckpointAndRestore(target, "threads", out _, out _);
        Assert.Equal("2000", target.AssertIntact()["threads"]);
    }
}
