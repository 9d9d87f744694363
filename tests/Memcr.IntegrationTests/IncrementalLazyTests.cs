using System.Globalization;
using System.Text.RegularExpressions;
using Memcr.Client;
using Memcr.IntegrationTests.Harness;
using Memcr.Linux.Ptrace;
using static Memcr.IntegrationTests.IncrementalTests;

namespace Memcr.IntegrationTests;

/// <summary>
/// memcr --lazy --incremental on real processes: the process runs again at once while its pages
/// come back, and what it writes meanwhile is tracked from the start (pages come in
/// write-protected), so that its next checkpoint saves only that; a chain of images is served
/// lazily too, and ends with every byte back and nothing of ours left once the tracking ends.
/// </summary>
public sealed class IncrementalLazyTests
{
    private static string P(int pid) => pid.ToString(CultureInfo.InvariantCulture);

    [Fact]
    public void LazyIncremental_WritesDuringAndAfterTheLazyRestoreAreSaved_AndAChainOfThreeIsServedLazily()
    {
        using var target = FifoTarget.StartLazytest(mb: 256);
        string dir = Repo.NewScratchDir("incrlazy");
        string[] fds = LazyRestoreTests.Fds(target);
        var (first, full) = Cycle(target, dir, "--lazy");
        Assert.Contains("restore complete", first);
        Assert.DoesNotContain("incremental over", first);
        AssertOk(target.Ask("WRITE 655"), first);
        var (second, increment) = Cycle(target, dir, "--lazy", "--verbose");
        Assert.Contains("incremental over 1 kept image", second);
        Assert.Contains("image check (2 images)", second);
        Assert.True(increment * 100 < full * 2, $"second image {increment} kB after 1% written, the first {full} kB\n{second}");
        // Moved, discarded and forked memory, and writes: also while the pages come back (the ticker
        // reads pages all along; the reader's read() writes into a buffer that may still be missing).
        AssertOk(target.Ask("MUTATE"), second);
        AssertOk(target.Ask("WRITE 300"), second);
        using (var memcr = MemcrProcess.Start("-p", P(target.Pid), "-d", dir, "-n", "--incremental", "--lazy", "-z", "-c", "--verbose"))
        {
            memcr.WaitFor("resumed in");
            AssertOk(target.Ask("WRITE 300"), memcr.Output);
            target.Feed();
            Assert.Equal(0, memcr.WaitForExit());
            Assert.Contains("incremental over 2 kept images", memcr.Output);
            Assert.Contains("image check (3 images)", memcr.Output);
            Assert.Contains("restore complete", memcr.Output);
        }
        Assert.Equal(3, Images(dir).Length);
        var report = target.Ask("CHECK FED");
        AssertOk(report, dir);
        Assert.Equal("65536", report["fed"]);
        // Everything written since the last restore, during the lazy part too, is in the next image.
        var (fourth, _) = Cycle(target, dir);
        Assert.Contains("incremental over 3 kept images", fourth);
        AssertOk(target.Ask("CHECK FED"), fourth);

        var (code, output) = MemcrProcess.Run("-p", P(target.Pid), "-d", dir, "--forget");
        Assert.True(code == 0, output);
        Assert.Empty(Directory.GetFiles(dir));
        Assert.Equal(fds, LazyRestoreTests.Fds(target));
        // MUTATE changed the mappings: what must hold is that none is registered with a userfaultfd.
        Assert.DoesNotContain(" um", LazyRestoreTests.VmFlags(target));
        Assert.DoesNotContain(" uw", LazyRestoreTests.VmFlags(target));
        AssertOk(target.Ask("CHECK"), output);
        Directory.Delete(dir);
    }

    [Fact]
    public async Task LazyIncremental_MemcrKilled_AServiceTakesOver_AndWhatTheProcessWroteMeanwhileIsSaved()
    {
        using var target = FifoTarget.StartLazytest(mb: 1024);
        string dir = Repo.NewScratchDir("incrlazykill");
        Cycle(target, dir, "--lazy");
        AssertOk(target.Ask("WRITE 100"), dir);
        using (var memcr = MemcrProcess.Start("-p", P(target.Pid), "-d", dir, "-n", "--incremental", "--lazy"))
        {
            memcr.WaitFor("resumed in");
            memcr.Signal(Signals.SIGKILL);
            memcr.WaitForExit();
            Assert.DoesNotContain("restore complete", memcr.Output);
        }
        // Written while the restore is unfinished, for certain: these writes wait for pages nobody
        // serves yet, as does the reader's read() of the feed into R (the FIFO stays open until the
        // service has served it: see FeedKeepingOpen). lazytest's counters live in its file mapping,
        // which is not checkpointed: what the feed wrote into R must come back from an image.
        target.Send("WRITE 300");
        using var feed = target.FeedKeepingOpen();
        using var daemon = Daemon.Start(dir, false, "--incremental", "--lazy");
        await LazyRestoreTests.WaitUntilServiceHoldsNothing(daemon);
        feed.Dispose();
        Assert.Contains("lazy restore taken over", daemon.Process.Output);
        Assert.Contains("restore complete", daemon.Process.Output);
        Assert.Contains("images kept in", daemon.Process.Output);
        AssertOk(target.Answer("WRITE 300"), daemon.Process.Output);
        Assert.Empty(Directory.GetFiles(dir, "*.lazy"));

        // The next checkpoint saves those writes over the two kept images, and every byte comes back.
        Assert.Equal(MemcrResponse.Ok, await daemon.Client.CheckpointAsync(target.Pid));
        Assert.Equal(MemcrResponse.Ok, await daemon.Client.RestoreAsync(target.Pid));
        await LazyRestoreTests.WaitUntilServiceHoldsNothing(daemon);
        Assert.Contains("incremental over 2 kept images", daemon.Process.Output);
        Assert.Equal(3, Images(dir).Length);
        long saved = long.Parse(Regex.Matches(daemon.Process.Output, @"image (\d+) kB:")[^1].Groups[1].Value, CultureInfo.InvariantCulture);
        Assert.True(saved >= 300 * 4, $"{saved} kB saved after 300 pages were written\n{daemon.Process.Output}");
        var report = target.Ask("CHECK FED");
        AssertOk(report, daemon.Process.Output);
        Assert.Equal("65536", report["fed"]);
        Assert.Equal(0, daemon.Stop());
        Directory.Delete(dir, recursive: true); // the chain, kept for a next checkpoint
    }

    [Fact]
    public void LazyIncremental_WithFileMappingsProcMemCompressionAndAKeyFile_SavesOnlyWhatWasWritten()
    {
        using var target = FifoTarget.StartLazytest(mb: 64);
        string dir = Repo.NewScratchDir("incrlazyall");
        string keys = Repo.NewScratchDir("incrlazykey");
        string key = ImageFeatureTests.KeyFile(keys, new string('5', 64));
        // -f: the written pages of its file mappings are written before it resumes, and their
        // writes tracked too (write-protect mode only, which async write-protect allows there).
        string[] options = ["--lazy", "-f", "-m", "-z", "-c", "--key-file", key, "--verbose"];
        var (first, full) = Cycle(target, dir, options);
        for (int i = 1; i <= 2; i++)
        {
            AssertOk(target.Ask("WRITE 160"), first);
            var (output, increment) = Cycle(target, dir, options);
            Assert.Contains($"incremental over {i} kept image", output);
            Assert.Contains($"image check ({i + 1} images)", output);
            Assert.True(increment * 100 < full * 5, $"image {increment} kB after 1% written, the first {full} kB\n{output}");
        }
        var (code, forgot) = MemcrProcess.Run("-p", P(target.Pid), "-d", dir, "--forget");
        Assert.True(code == 0, forgot);
        Assert.Empty(Directory.GetFiles(dir));
        Assert.DoesNotContain(" uw", LazyRestoreTests.VmFlags(target));
        AssertOk(target.Ask("CHECK"), forgot);
        Directory.Delete(dir);
        Directory.Delete(keys, recursive: true);
    }
}
