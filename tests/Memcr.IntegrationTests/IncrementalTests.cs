using System.Globalization;
using System.Text.RegularExpressions;
using Memcr.IntegrationTests.Harness;

namespace Memcr.IntegrationTests;

/// <summary>
/// memcr --incremental on real processes: after a restore the image is kept and the process's
/// writes are tracked, so that its next checkpoint saves only what it wrote; a chain of such
/// images restores every byte, also after the process moved and discarded memory; a damaged older
/// image is found before anything is written; and the tracking ends leaving nothing behind.
/// </summary>
public sealed partial class IncrementalTests
{
    private static string P(int pid) => pid.ToString(CultureInfo.InvariantCulture);

    internal static void AssertOk(Dictionary<string, string> report, string context) =>
        Assert.True(report["ok"] == "1", $"{string.Join(' ', report.Select(kv => kv.Key + "=" + kv.Value))}\n{context}");

    [GeneratedRegex(@"image (\d+) kB:")]
    private static partial Regex ImageSize();

    /// <summary>memcr -p PID --incremental -n with <paramref name="extra"/>: checks it worked and returns its output and the image's size.</summary>
    internal static (string Output, long ImageKb) Cycle(FifoTarget target, string dir, params string[] extra)
    {
        var (code, output) = MemcrProcess.Run(["-p", P(target.Pid), "-d", dir, "-n", "--incremental", .. extra]);
        Assert.True(code == 0, output);
        Assert.Contains(extra.Contains("--lazy") ? "images kept in" : "image kept at", output);
        AssertOk(target.Ask("CHECK"), output);
        return (output, long.Parse(ImageSize().Match(output).Groups[1].Value, CultureInfo.InvariantCulture));
    }

    internal static string[] Images(string dir) => Directory.GetFiles(dir, "*.img").Order(StringComparer.Ordinal).ToArray();

    [Fact]
    public void Incremental_OnePercentWritten_SavesAboutOnePercent_AndAChainOfThreeGivesEveryByteBack()
    {
        using var target = FifoTarget.StartLazytest(mb: 1024);
        string dir = Repo.NewScratchDir("incr");
        string[] fds = LazyRestoreTests.Fds(target);
        var (first, full) = Cycle(target, dir);
        Assert.DoesNotContain("incremental over", first);
        // 1% of A's pages rewritten while it runs; the ticker checks random pages all along.
        AssertOk(target.Ask("WRITE 2621"), first);
        var (second, increment) = Cycle(target, dir);
        Assert.Contains("incremental over 1 kept image", second);
        Assert.True(increment * 100 < full * 2, $"second image {increment} kB after 1% written, the first {full} kB\n{second}");
        // The process moves memory, discards memory (it must read zeros, not the kept pages) and forks.
        AssertOk(target.Ask("MUTATE"), second);
        AssertOk(target.Ask("WRITE 500"), second);
        var (third, _) = Cycle(target, dir, "-z", "-c", "--verbose");
        Assert.Contains("incremental over 2 kept images", third);
        Assert.Contains("pages written back from 3 images", third);
        Assert.Equal(3, Images(dir).Length);
        AssertOk(target.Ask("CHECK"), third);

        var (code, output) = MemcrProcess.Run("-p", P(target.Pid), "-d", dir, "--forget");
        Assert.True(code == 0, output);
        Assert.Contains($"write tracking of pid {target.Pid} ended", output);
        Assert.Empty(Directory.GetFiles(dir));
        Assert.Equal(fds, LazyRestoreTests.Fds(target));
        Assert.DoesNotContain(" uw", LazyRestoreTests.VmFlags(target));
        AssertOk(target.Ask("CHECK"), output);
        Directory.Delete(dir);
    }

    [Fact]
    public void Incremental_ChainTooLong_IsCompactedIntoOneFullImage()
    {
        using var target = FifoTarget.StartLazytest(mb: 64);
        string dir = Repo.NewScratchDir("incrcompact");
        Cycle(target, dir);
        for (int i = 0; i < 3; i++)
        {
            AssertOk(target.Ask("WRITE 50"), dir);
            Cycle(target, dir);
        }
        Assert.Equal(4, Images(dir).Length);
        AssertOk(target.Ask("WRITE 50"), dir);
        var (output, _) = Cycle(target, dir);
        Assert.Contains("compacting the chain (4 images): a full checkpoint", output);
        Assert.Single(Images(dir));
        // A checkpoint without --incremental ends the tracking.
        var (code, plain) = MemcrProcess.Run("-p", P(target.Pid), "-d", dir, "-n");
        Assert.True(code == 0, plain);
        Assert.Contains("not incremental: ending the write tracking", plain);
        Assert.Empty(Directory.GetFiles(dir));
        Assert.DoesNotContain(" uw", LazyRestoreTests.VmFlags(target));
        Directory.Delete(dir);
    }

    [Theory]
    [InlineData("truncate")]
    [InlineData("delete")]
    public void Incremental_DamagedOlderImage_IsFoundBeforeAnyPageIsWritten(string damage)
    {
        using var target = FifoTarget.StartLazytest(mb: 64);
        string dir = Repo.NewScratchDir("incrdamage");
        Cycle(target, dir);
        AssertOk(target.Ask("WRITE 100"), dir);
        using var memcr = MemcrProcess.Start("-p", P(target.Pid), "-d", dir, "--incremental", "--verbose");
        memcr.WaitForPrompt();
        string older = Images(dir).Single(f => Path.GetFileName(f) != $"pages-{target.Pid}.img");
        ImageDamage.Apply(older, damage);
        memcr.PressEnter();
        Assert.Equal(1, memcr.WaitForExit());
        Assert.Contains($"cannot restore pid {target.Pid}", memcr.Output);
        Assert.Contains(older, memcr.Output);
        Assert.DoesNotContain("pages written back", memcr.Output);
        Assert.True(target.WaitUntilDead(TimeSpan.FromSeconds(10)), memcr.Output);
        Assert.Empty(Directory.GetFiles(dir));
        Directory.Delete(dir);
    }

    [Fact]
    public void Incremental_Service_ForgetEndsTheTracking_AndAnExitedProcessLeavesNothing()
    {
        string dir = Repo.NewScratchDir("incrsvc");
        using var daemon = Daemon.Start(dir, false, "--incremental", "-e", "-z");
        string sock = daemon.Location;
        using var target = FifoTarget.StartLazytest(mb: 64);
        string[] fds = LazyRestoreTests.Fds(target);
        for (int i = 0; i < 3; i++)
        {
            var (code, output) = Repo.Run(Repo.MemcrClient, "-l", sock, "-p", P(target.Pid), "-c", "-r");
            Assert.True(code == 0, output);
            AssertOk(target.Ask("CHECK"), output);
            AssertOk(target.Ask("WRITE 100"), output);
        }
        Assert.Equal(3, Images(dir).Length);
        var (held, answer) = Repo.Run(Repo.MemcrClient, "-l", sock, "-p", P(target.Pid), "-c");
        Assert.True(held == 0, answer);
        (held, answer) = Repo.Run(Repo.MemcrClient, "-l", sock, "-p", P(target.Pid), "--forget");
        Assert.True(held == 255, answer); // checkpointed: restore it first
        (held, answer) = Repo.Run(Repo.MemcrClient, "-l", sock, "-p", P(target.Pid), "-r", "--forget");
        Assert.True(held == 0, answer);
        Assert.Contains($"Will forget {target.Pid}.", answer);
        Assert.Empty(Images(dir));
        Assert.Empty(Directory.GetFiles(dir, "*.track"));
        Assert.Equal(fds, LazyRestoreTests.Fds(target));
        Assert.DoesNotContain(" uw", LazyRestoreTests.VmFlags(target));
        AssertOk(target.Ask("CHECK"), answer);

        // Tracked again, then it exits: the service removes what it kept.
        (held, answer) = Repo.Run(Repo.MemcrClient, "-l", sock, "-p", P(target.Pid), "-c", "-r");
        Assert.True(held == 0, answer);
        Assert.Single(Images(dir));
        target.Send("EXIT");
        Assert.True(target.WaitUntilDead(TimeSpan.FromSeconds(10)));
        for (int i = 0; i < 50 && (Images(dir).Length > 0 || Directory.GetFiles(dir, "*.track").Length > 0); i++)
            Thread.Sleep(100);
        Assert.Empty(Images(dir));
        Assert.Empty(Directory.GetFiles(dir, "*.track"));
    }
}
