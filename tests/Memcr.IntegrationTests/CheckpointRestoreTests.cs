using Memcr.IntegrationTests.Harness;
using Memcr.Linux.Ptrace;

namespace Memcr.IntegrationTests;

public sealed class CheckpointRestoreTests
{
    [Fact]
    public void Checkpoint_DropsRssFreezesThreadsKeepsMaps_AndRestoreGivesEveryByteBack()
    {
        using var target = FifoTarget.StartMemtest(heapMb: 64);
        target.AssertIntact();
        string dir = Repo.NewScratchDir("basic");
        string image = Path.Combine(dir, $"pages-{target.Pid}.img");
        string mapsBefore = target.Maps;
        long anonBefore = target.Status.RssAnonKb;
        Assert.True(anonBefore > 80 * 1024, $"RssAnon {anonBefore} kB before");

        using var memcr = MemcrProcess.Start("-p", target.Pid.ToString(), "-d", dir);
        memcr.WaitForPrompt();

        var during = target.Status;
        Assert.True(during.RssAnonKb < 2048, $"RssAnon while checkpointed: {during.RssAnonKb} kB (was {anonBefore} kB)");
        Assert.Equal(mapsBefore, target.Maps);
        Assert.All(target.ThreadStates, s => Assert.True(s is 't' or 'T', $"thread state {s} while frozen"));
        Assert.True(File.Exists(image));
        Assert.Contains("download took", memcr.Output);
        Assert.Contains("RssAnon", memcr.Output);

        memcr.PressEnter();
        Assert.Equal(0, memcr.WaitForExit());
        Assert.Contains("upload took", memcr.Output);
        Assert.False(File.Exists(image), "the image is removed after restore");
        Assert.Equal(0, target.Status.TracerPid);

        var report = target.AssertIntact();
        Assert.Equal("0", report["eintr"]);
        Assert.True(target.Status.RssAnonKb > anonBefore * 9 / 10, $"RssAnon after restore {target.Status.RssAnonKb} kB");
        Assert.Equal(mapsBefore, target.Maps);
        Directory.Delete(dir, recursive: true);
    }

    [Fact]
    public void NoWait_WithDumpDir_ChecksPointsAndRestoresAtOnce()
    {
        using var target = FifoTarget.StartMemtest(heapMb: 32);
        string dir = Repo.NewScratchDir("nowait");
        var (code, output) = MemcrProcess.Run("-p", target.Pid.ToString(), "-n", "-d", dir);
        Assert.True(code == 0, output);
        Assert.Contains($"stored at {dir}/pages-{target.Pid}.img", output);
        Assert.DoesNotContain(MemcrProcess.Prompt, output);
        Assert.Empty(Directory.GetFiles(dir));
        target.AssertIntact();
        Directory.Delete(dir);
    }

    [Fact]
    public void RssFile_DropsPrivateFileMappings_AndRestoresTheirWrittenPages()
    {
        using var target = FifoTarget.StartMemtest(heapMb: 16);
        string dir = Repo.NewScratchDir("rssfile");
        long fileBefore = target.Status.RssFileKb;
        using var memcr = MemcrProcess.Start("-p", target.Pid.ToString(), "-f", "-d", dir);
        memcr.WaitForPrompt();
        var during = target.Status;
        Assert.True(during.RssFileKb < fileBefore / 4, $"RssFile {fileBefore} kB -> {during.RssFileKb} kB with -f");
        Assert.True(during.VmRssKb < 1024, $"VmRSS {during.VmRssKb} kB with -f");
        memcr.PressEnter();
        Assert.True(memcr.WaitForExit() == 0, memcr.Output);
        target.AssertIntact(); // verifies the written (even) and clean (odd) pages of the file mapping
        Directory.Delete(dir, recursive: true);
    }

    [Fact]
    public void ProcMem_ReadsThroughProcPidMem()
    {
        using var target = FifoTarget.StartMemtest(heapMb: 16);
        var (code, output) = MemcrProcess.Run("-p", target.Pid.ToString(), "-n", "-m", "-d", "/var/tmp");
        Assert.True(code == 0, output);
        target.AssertIntact();
    }

    [Fact]
    public void SignalsSentWhileFrozen_AreDeliveredAfterRestore()
    {
        using var target = FifoTarget.StartMemtest(heapMb: 16);
        using var memcr = MemcrProcess.Start("-p", target.Pid.ToString(), "-d", "/var/tmp");
        memcr.WaitForPrompt();
        for (int i = 0; i < 3; i++)
        {
            target.Signal(Signals.SIGUSR2);
            target.Signal(Signals.SIGRTMIN);
        }
        memcr.PressEnter();
        Assert.True(memcr.WaitForExit() == 0, memcr.Output);
        var report = target.AssertIntact(rt: 3);
        Assert.Equal("3", report["rt"]);
        Assert.True(int.Parse(report["usr2"]) >= 1, "SIGUSR2 delivered at least once");
        Assert.Equal("0", report["eintr"]);
    }

    [Fact]
    public void RepeatedCheckpoints_KeepTheTargetIntact()
    {
        using var target = FifoTarget.StartMemtest(heapMb: 16);
        for (int i = 0; i < 5; i++)
        {
            var (code, output) = MemcrProcess.Run("-p", target.Pid.ToString(), "-n", i % 2 == 0 ? "-f" : "-m", "-d", "/var/tmp");
            Assert.True(code == 0, output);
            target.AssertIntact();
        }
    }

    [Fact]
    public void ASleepCheckpointedPastItsDeadline_EndsOnRestore_InsteadOfStartingOver()
    {
        // The main thread sleeps 4 s in a relative clock_nanosleep; frozen from about 0 to 5 s, it
        // must wake right after the restore (restart_syscall keeps the deadline), not at 9 s.
        string exe = Gcc.Build("sleeper");
        using var target = FifoTarget.Start("sleeper", dir => [exe, dir, "4"]);
        var started = System.Diagnostics.Stopwatch.StartNew();
        using var memcr = MemcrProcess.Start("-p", target.Pid.ToString(), "-d", "/var/tmp");
        memcr.WaitForPrompt();
        if (TimeSpan.FromSeconds(5) - started.Elapsed is { Ticks: > 0 } rest)
            Thread.Sleep(rest);
        memcr.PressEnter();
        Assert.True(memcr.WaitForExit() == 0, memcr.Output);
        var report = target.Answer("the sleep");
        Assert.Equal("0", report["result"]);
        int slept = int.Parse(report["slept"]);
        Assert.True(slept is >= 4000 and < 8000, $"slept {slept} ms: a 4 s sleep frozen until 5 s was started over");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void AThreadInSigsuspend_GetsItsOwnMaskBackAfterTheSignal(bool signalWhileFrozen)
    {
        // Blocked in sigsuspend(empty set), the thread's mask is the temporary one and the kernel
        // keeps its own aside; the restore must put that one back, not the temporary one.
        string exe = Gcc.Build("suspender");
        using var target = FifoTarget.Start("suspender", dir => [exe, dir]);
        using var memcr = MemcrProcess.Start("-p", target.Pid.ToString(), "-d", "/var/tmp");
        memcr.WaitForPrompt();
        if (signalWhileFrozen)
            target.Signal(Signals.SIGUSR1);
        memcr.PressEnter();
        Assert.True(memcr.WaitForExit() == 0, memcr.Output);
        if (!signalWhileFrozen)
            target.Signal(Signals.SIGUSR1);
        var report = target.Answer("SIGUSR1");
        Assert.Equal("1", report["got"]);
        Assert.True(report["blocked"] == "1", "SIGUSR1 is unblocked after sigsuspend returned: the temporary mask stayed");
    }
}
