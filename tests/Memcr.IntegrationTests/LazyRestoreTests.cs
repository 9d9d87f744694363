using System.Text.RegularExpressions;
using Memcr.Client;
using Memcr.IntegrationTests.Harness;

namespace Memcr.IntegrationTests;

/// <summary>
/// memcr -p --lazy: the process runs again before its pages are back, they come back as its
/// threads touch them (userfaultfd) and in the background, and nothing of memcr's is left in it.
/// </summary>
public sealed partial class LazyRestoreTests
{
    /// <summary>The VmFlags of every mapping, in order: a registration left behind would show as "um".</summary>
    internal static string VmFlags(FifoTarget t) =>
        string.Join('\n', File.ReadLines($"/proc/{t.Pid}/smaps").Where(l => l.StartsWith("VmFlags:", StringComparison.Ordinal)));

    internal static string[] Fds(FifoTarget t) =>
        [.. Directory.GetFiles($"/proc/{t.Pid}/fd").Select(f => $"{Path.GetFileName(f)} -> {File.ResolveLinkTarget(f, false)?.FullName}").Order()];

    [Theory]
    [InlineData("")]
    [InlineData("-z -c -e")]
    [InlineData("-f")]
    [InlineData("-m")]
    public void Lazy_TheProcessRunsBeforeItsPagesAreBack_AndEndsIntactWithNothingOfOursLeft(string options)
    {
        using var target = FifoTarget.StartMemtest(heapMb: 128);
        string dir = Repo.NewScratchDir("lazy");
        string maps = target.Maps, flags = VmFlags(target);
        string[] fds = Fds(target);
        string[] args = ["-p", target.Pid.ToString(), "-n", "--lazy", "-d", dir, .. options.Split(' ', StringSplitOptions.RemoveEmptyEntries)];
        var (code, output) = MemcrProcess.Run(args);
        Assert.True(code == 0, output);
        Assert.Contains("resuming, pages on demand", output);
        var done = RestoreComplete().Match(output);
        Assert.True(done.Success, output);
        Assert.True(long.Parse(done.Groups[1].Value) >= 128, output);
        Assert.Equal(0, target.Status.TracerPid);
        var report = target.AssertIntact();
        Assert.Equal("0", report["eintr"]);
        Assert.Equal(maps, target.Maps);
        Assert.Equal(flags, VmFlags(target));
        Assert.Equal(fds, Fds(target));
        Assert.Empty(Directory.GetFiles(dir));
        Directory.Delete(dir);
    }

    [Fact]
    public async Task Lazy_InServiceMode_AnswersTheRestoreOnceTheProcessRuns_AndEndsIntact()
    {
        using var target = FifoTarget.StartMemtest(heapMb: 128);
        string dir = Repo.NewScratchDir("lazysvc");
        string maps = target.Maps, flags = VmFlags(target);
        string[] fds = Fds(target);
        using var daemon = Daemon.Start(dir, extra: ["--lazy", "-z"]);
        Assert.Equal(MemcrResponse.Ok, await daemon.Client.CheckpointAsync(target.Pid));
        Assert.Equal(MemcrResponse.Ok, await daemon.Client.RestoreAsync(target.Pid));
        var report = target.AssertIntact();
        Assert.Equal("0", report["eintr"]);
        await WaitUntilServiceHoldsNothing(daemon);
        Assert.Contains("restore complete", daemon.Process.Output);
        Assert.Equal(maps, target.Maps);
        Assert.Equal(flags, VmFlags(target));
        Assert.Equal(fds, Fds(target));
        Assert.Empty(Directory.GetFiles(dir, "pages-*"));
        Assert.Empty(Directory.GetFiles(dir, "memcr-*.journal"));
        // Parked again at once: the checkpoint follows the end of the lazy restore.
        Assert.Equal(MemcrResponse.Ok, await daemon.Client.CheckpointAsync(target.Pid));
        Assert.Equal(MemcrResponse.Ok, await daemon.Client.RestoreAsync(target.Pid));
        target.AssertIntact();
        Assert.Equal(0, daemon.Stop());
        Directory.Delete(dir, recursive: true);
    }

    /// <summary>Waits until the service's status lists no process (a lazy restore ends after its answer).</summary>
    internal static async Task WaitUntilServiceHoldsNothing(Daemon daemon)
    {
        var waited = System.Diagnostics.Stopwatch.StartNew();
        while ((await daemon.Client.GetStatusAsync()).Processes.Count > 0)
        {
            Assert.True(waited.Elapsed < TimeSpan.FromSeconds(60), daemon.Process.Output);
            await Task.Delay(20);
        }
    }

    [Fact]
    public void Lazy_WithAWrongValue_IsAUsageError()
    {
        var (code, output) = MemcrProcess.Run("-p", "1", "--lazy=sometimes");
        Assert.NotEqual(0, code);
        Assert.Contains("invalid --lazy 'sometimes'", output);
    }

    [GeneratedRegex(@"restore complete: (\d+) MiB in \d+ ms, (\d+) pages on demand")]
    private static partial Regex RestoreComplete();
}
