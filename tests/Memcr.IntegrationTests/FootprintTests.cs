using System.Diagnostics;
using System.Globalization;
using Memcr.Client;
using Memcr.IntegrationTests.Harness;

namespace Memcr.IntegrationTests;

/// <summary>
/// memcr's own memory: a service idles small, stays within its buffer budget however many
/// operations run at once, and is back to idle within a second of the last one; a single memcr -p
/// stays within its budget too. Memory is asserted (it is not wall-clock time), with margins for
/// the code pages an operation touches.
/// </summary>
public sealed class FootprintTests
{
    private const long MiB = 1024; // in kB, as /proc reports

    /// <summary>
    /// What a service may hold while it waits for requests: 1.5 × the original's 3.4 MB, the issue's
    /// bound (3.7–4.2 MB measured here, 2 MB of it NativeAOT's runtime data).
    /// </summary>
    private const long IdleKb = 5100;

    /// <summary>Back to idle: what was measured idle, give or take the code pages a thread touches now and then.</summary>
    private const long IdleSlackKb = 3 * MiB / 2;

    /// <summary>While a process is held its worker watches it (and touches code doing so).</summary>
    private const long HoldingKb = 3 * MiB;

    /// <summary>Above the budget: the runtime, code pages an operation touches, and its bookkeeping.</summary>
    private const long OverBudgetKb = 18 * MiB;

    private static long StatusKb(int pid, string field)
    {
        foreach (string line in File.ReadLines($"/proc/{pid}/status"))
        {
            if (line.StartsWith(field + ":", StringComparison.Ordinal))
                return long.Parse(line[(field.Length + 1)..].Trim().Split(' ')[0], CultureInfo.InvariantCulture);
        }
        throw new InvalidOperationException($"no {field} in /proc/{pid}/status");
    }

    /// <summary>Waits up to <paramref name="within"/> for the daemon's RSS to come down to <paramref name="kb"/>; returns the last RSS seen.</summary>
    private static long RssWithin(Daemon daemon, TimeSpan within, long kb)
    {
        var sw = Stopwatch.StartNew();
        long rss;
        while ((rss = StatusKb(daemon.Pid, "VmRSS")) > kb && sw.Elapsed < within)
            Thread.Sleep(20);
        return rss;
    }

    private static long SettledIdle(Daemon daemon)
    {
        // The service trims itself a quarter of a second after starting.
        Thread.Sleep(1000);
        return StatusKb(daemon.Pid, "VmRSS");
    }

    [Theory]
    [InlineData("")]
    [InlineData("-z")]
    [InlineData("-z -c -e")]
    public async Task Service_IdlesSmall_StaysWithinItsBudgetFor256MiB_AndIsBackToIdleWithinASecond(string options)
    {
        string dir = Repo.NewScratchDir("footprint");
        using var target = FifoTarget.StartMemtest(256);
        using var daemon = Daemon.Start(dir, extra: options.Split(' ', StringSplitOptions.RemoveEmptyEntries));
        long idle = SettledIdle(daemon);
        Assert.True(idle <= IdleKb, $"idle service RSS {idle} kB");

        Assert.Equal(MemcrResponse.Ok, await daemon.Client.CheckpointAsync(target.Pid));
        long afterCheckpoint = RssWithin(daemon, TimeSpan.FromSeconds(1), idle + HoldingKb);
        Assert.True(afterCheckpoint <= idle + HoldingKb, $"RSS {afterCheckpoint} kB a second after the checkpoint, {idle} kB idle");
        Assert.Equal(MemcrResponse.Ok, await daemon.Client.RestoreAsync(target.Pid));
        long afterRestore = RssWithin(daemon, TimeSpan.FromSeconds(1), idle + IdleSlackKb);
        long peak = StatusKb(daemon.Pid, "VmHWM");
        target.AssertIntact();

        Assert.True(afterRestore <= idle + IdleSlackKb, $"RSS {afterRestore} kB a second after the restore, {idle} kB idle");
        Assert.True(peak <= 16 * MiB + OverBudgetKb, $"peak RSS {peak} kB with a 16 MiB budget");
        Assert.Equal(0, daemon.Stop());
        Directory.Delete(dir, recursive: true);
    }

    [Fact]
    public async Task Service_EightCheckpointsAndRestoresAtOnce_ShareOneBudget()
    {
        string dir = Repo.NewScratchDir("footprint8");
        var targets = Enumerable.Range(0, 8).Select(_ => FifoTarget.StartMemtest(64)).ToList();
        try
        {
            using var daemon = Daemon.Start(dir);
            long idle = SettledIdle(daemon);
            var client = daemon.Client;
            Assert.All(await Task.WhenAll(targets.Select(t => client.CheckpointAsync(t.Pid))), r => Assert.Equal(MemcrResponse.Ok, r));
            Assert.All(await Task.WhenAll(targets.Select(t => client.RestoreAsync(t.Pid))), r => Assert.Equal(MemcrResponse.Ok, r));
            long afterRestore = RssWithin(daemon, TimeSpan.FromSeconds(1), idle + IdleSlackKb);
            long peak = StatusKb(daemon.Pid, "VmHWM");
            targets.ForEach(t => t.AssertIntact());
            // Eight operations with buffers of their own would need 8 × 16 MiB and more.
            Assert.True(peak <= 16 * MiB + OverBudgetKb + 4 * MiB, $"peak RSS {peak} kB for eight operations with a 16 MiB budget");
            Assert.True(afterRestore <= idle + IdleSlackKb, $"RSS {afterRestore} kB a second after the restores, {idle} kB idle");
        }
        finally
        {
            targets.ForEach(t => t.Dispose());
        }
        Directory.Delete(dir, recursive: true);
    }

    [Fact]
    public async Task Service_ATargetWithTwentyThousandMappings_LeavesItBackAtIdle()
    {
        string dir = Repo.NewScratchDir("footprint20k");
        string exe = Gcc.Build("manyvmas");
        using var target = FifoTarget.Start("manyvmas", d => [exe, d, "80"]);
        Assert.True(target.Maps.Split('\n').Length > 20_000, "the target should have over 20,000 mappings");
        using var daemon = Daemon.Start(dir);
        long idle = SettledIdle(daemon);
        Assert.Equal(MemcrResponse.Ok, await daemon.Client.CheckpointAsync(target.Pid));
        Assert.Equal(MemcrResponse.Ok, await daemon.Client.RestoreAsync(target.Pid));
        long afterRestore = RssWithin(daemon, TimeSpan.FromSeconds(1), idle + IdleSlackKb);
        long peak = StatusKb(daemon.Pid, "VmHWM");
        target.AssertIntact();
        Assert.True(afterRestore <= idle + IdleSlackKb, $"RSS {afterRestore} kB a second after the restore, {idle} kB idle");
        // The original issue measured 102 MB here, and 80 MB left after.
        Assert.True(peak <= 16 * MiB + OverBudgetKb + 12 * MiB, $"peak RSS {peak} kB");
        Directory.Delete(dir, recursive: true);
    }

    /// <summary>Checkpoints and restores with memcr -p; returns memcr's peak RSS (its VmHWM, read until it exits).</summary>
    private static long SingleProcessPeak(FifoTarget target, string name, params string[] extra)
    {
        string dir = Repo.NewScratchDir(name);
        using var memcr = MemcrProcess.Start(["-p", target.Pid.ToString(CultureInfo.InvariantCulture), "-d", dir, .. extra]);
        long peak = 0;
        using var stop = new CancellationTokenSource();
        var sampler = new Thread(() =>
        {
            while (!stop.IsCancellationRequested)
            {
                try
                {
                    peak = Math.Max(peak, StatusKb(memcr.Pid, "VmHWM"));
                }
                catch (Exception e) when (e is IOException or InvalidOperationException)
                {
                    return; // exited (a zombie's status has no memory lines)
                }
                Thread.Sleep(2);
            }
        });
        sampler.Start();
        memcr.WaitForPrompt();
        memcr.PressEnter();
        Assert.True(memcr.WaitForExit() == 0, memcr.Output);
        stop.Cancel();
        sampler.Join();
        target.AssertIntact();
        Directory.Delete(dir, recursive: true);
        return peak;
    }

    [Fact]
    public void SingleProcess_256MiB_StaysWithinItsBudget()
    {
        using var target = FifoTarget.StartMemtest(256);
        long peak = SingleProcessPeak(target, "footprint-p");
        Assert.True(peak <= 16 * MiB + OverBudgetKb, $"memcr -p peak RSS {peak} kB with a 16 MiB budget");
        // A larger budget is used when given (the buffers are what grows).
        long larger = SingleProcessPeak(target, "footprint-p64", "--buffer-budget", "64M");
        Assert.True(larger > peak + 4 * MiB, $"peak {larger} kB with 64 MiB, {peak} kB with 16 MiB");
    }

    [Fact]
    public void SingleProcess_SixtyThousandVmas_PeaksAsTheSameDataInOneVma()
    {
        string exe = Gcc.Build("manyvmas");
        long manyPeak, flatPeak;
        using (var many = FifoTarget.Start("manyvmas", d => [exe, d, "240"]))
            manyPeak = SingleProcessPeak(many, "footprint-60k");
        using (var flat = FifoTarget.Start("manyvmas", d => [exe, d, "240", "0", "flat"]))
            flatPeak = SingleProcessPeak(flat, "footprint-flat");
        // The original issue measured 272 MB with 60,000 VMAs. What remains per VMA is the image's
        // VMA table (40 bytes each) and the planning's compact list (32 bytes each): 3 MB measured.
        Assert.True(manyPeak <= flatPeak + 6 * MiB, $"memcr -p peak RSS {manyPeak} kB for 60,000 VMAs, {flatPeak} kB for the same data in one VMA");
    }
}
