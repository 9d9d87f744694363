using System.Diagnostics;
using System.Globalization;
using Memcr.IntegrationTests.Harness;
using Memcr.Linux.Ptrace;

namespace Memcr.IntegrationTests;

/// <summary>Every refusal and failure leaves the target as it was (or, when it cannot be, says so).</summary>
public sealed class ErrorTests
{
    /// <summary>The target runs, is not traced, has its maps and memory.</summary>
    private static void AssertUntouched(FifoTarget target, string mapsBefore)
    {
        Assert.Equal(0, target.Status.TracerPid);
        Assert.All(target.ThreadStates, s => Assert.True(s is 'S' or 'R', $"thread state {s}"));
        Assert.Equal(mapsBefore, target.Maps);
        target.AssertIntact();
        Assert.False(File.Exists($"/tmp/pages-{target.Pid}.img"));
    }

    private static string Fails(params string[] args)
    {
        var (code, output) = MemcrProcess.Run(args);
        Assert.True(code != 0, $"memcr {string.Join(' ', args)} succeeded:\n{output}");
        return output;
    }

    [Fact]
    public void NoSuchPid_IsRefused()
    {
        int pidMax = int.Parse(File.ReadAllText("/proc/sys/kernel/pid_max").Trim(), CultureInfo.InvariantCulture);
        int pid = Enumerable.Range(1, 1000).Select(i => pidMax - i).First(p => !Directory.Exists($"/proc/{p}"));
        Assert.Contains($"pid {pid}: no such process", Fails("-p", pid.ToString(), "-n"));
    }

    [Theory]
    [InlineData("0", "invalid pid 0: a pid must be > 0")]
    [InlineData("-7", "invalid pid -7: a pid must be > 0")]
    [InlineData("12abc", "invalid pid '12abc': not a number")]
    public void GarbagePid_IsRefused(string pid, string message) => Assert.Contains(message, Fails("-p", pid, "-n"));

    [Fact]
    public void OwnPid_IsRefused()
    {
        // exec keeps the shell's pid: memcr is asked to checkpoint itself.
        var (code, output) = Repo.Run("sh", "-c", $"exec {Repo.Memcr} -n -p $$");
        Assert.NotEqual(0, code);
        Assert.Contains("is memcr itself", output);
    }

    [Fact]
    public void KernelThread_IsRefused() => Assert.Contains("pid 2 (kthreadd) is a kernel thread", Fails("-p", "2", "-n"));

    [Fact]
    public void Zombie_IsRefused()
    {
        var psi = new ProcessStartInfo("sh") { RedirectStandardOutput = true };
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add("sleep 0.2 & echo $!; exec sleep 60");
        using var parent = Process.Start(psi)!;
        try
        {
            int zombie = int.Parse(parent.StandardOutput.ReadLine()!, CultureInfo.InvariantCulture);
            var sw = Stopwatch.StartNew();
            while (!File.ReadAllText($"/proc/{zombie}/stat").Contains(") Z ", StringComparison.Ordinal) && sw.Elapsed < TimeSpan.FromSeconds(10))
                Thread.Sleep(10);
            Assert.Contains($"pid {zombie} (sleep) is a zombie", Fails("-p", zombie.ToString(), "-n"));
        }
        finally
        {
            parent.Kill();
            parent.WaitForExit();
        }
    }

    [Fact]
    public void AlreadyTracedTarget_IsRefused_AndTheFirstCheckpointStillRestores()
    {
        using var target = FifoTarget.StartMemtest(heapMb: 8);
        using var first = MemcrProcess.Start("-p", target.Pid.ToString(), "-d", "/var/tmp");
        first.WaitForPrompt();
        var output = Fails("-p", target.Pid.ToString(), "-n", "-d", "/var/tmp");
        Assert.Contains($"is already traced by pid {first.Pid}", output);
        Assert.True(File.Exists($"/var/tmp/pages-{target.Pid}.img"), "the first checkpoint's image is left alone");
        first.PressEnter();
        Assert.Equal(0, first.WaitForExit());
        target.AssertIntact();
    }

    [Fact]
    public void MissingDumpDir_IsRefused()
    {
        using var target = FifoTarget.StartMemtest(heapMb: 8);
        string maps = target.Maps;
        Assert.Contains("dump dir /nonexistent/memcr does not exist", Fails("-p", target.Pid.ToString(), "-n", "-d", "/nonexistent/memcr"));
        Assert.Contains("is not a directory", Fails("-p", target.Pid.ToString(), "-n", "-d", "/etc/hostname"));
        AssertUntouched(target, maps);
    }

    [Fact]
    public void ReadOnlyDumpDir_IsRefused()
    {
        using var target = FifoTarget.StartMemtest(heapMb: 8);
        string maps = target.Maps;
        using var mount = TmpfsMount.Create("ro,size=1m");
        Assert.Contains($"dump dir {mount.Path} is not writable", Fails("-p", target.Pid.ToString(), "-n", "-d", mount.Path));
        AssertUntouched(target, maps);
    }

    [Fact]
    public void DiskFull_LeavesTheTargetRunningUntouched()
    {
        using var target = FifoTarget.StartMemtest(heapMb: 64);
        string maps = target.Maps;
        using var mount = TmpfsMount.Create("size=8m");
        var output = Fails("-p", target.Pid.ToString(), "-n", "-d", mount.Path);
        Assert.Contains("not enough space", output);
        Assert.Contains("left running untouched", output);
        Assert.Empty(Directory.GetFileSystemEntries(mount.Path));
        AssertUntouched(target, maps);
    }

    [Fact]
    public void TargetKilledWhileFrozen_IsReported_AndTheImageRemoved()
    {
        using var target = FifoTarget.StartMemtest(heapMb: 16);
        using var memcr = MemcrProcess.Start("-p", target.Pid.ToString(), "-d", "/var/tmp");
        memcr.WaitForPrompt();
        target.Signal(Signals.SIGKILL);
        Assert.NotEqual(0, memcr.WaitForExit());
        Assert.Contains($"target pid {target.Pid} terminated by SIGKILL while checkpointed", memcr.Output);
        Assert.False(File.Exists($"/var/tmp/pages-{target.Pid}.img"));
    }

    [Fact]
    public void TargetSentSigtermWhileFrozen_DiesOfIt()
    {
        using var target = FifoTarget.StartMemtest(heapMb: 16);
        using var memcr = MemcrProcess.Start("-p", target.Pid.ToString(), "-d", "/var/tmp");
        memcr.WaitForPrompt();
        target.Signal(Signals.SIGTERM);
        Assert.NotEqual(0, memcr.WaitForExit());
        Assert.Contains($"target pid {target.Pid} terminated by SIGTERM while checkpointed", memcr.Output);
        Assert.True(target.WaitUntilDead(TimeSpan.FromSeconds(10)));
        Assert.False(File.Exists($"/var/tmp/pages-{target.Pid}.img"));
    }

    [Theory]
    [InlineData("flip", "checksum mismatch")]
    [InlineData("truncate", "truncated")]
    [InlineData("delete", "pages-")]
    public void DamagedImageWhileFrozen_IsDetected_AndTheTargetKilled(string damage, string message)
    {
        using var target = FifoTarget.StartMemtest(heapMb: 16);
        string dir = Repo.NewScratchDir("damaged");
        string image = Path.Combine(dir, $"pages-{target.Pid}.img");
        using var memcr = MemcrProcess.Start("-p", target.Pid.ToString(), "-d", dir);
        memcr.WaitForPrompt();
        ImageDamage.Apply(image, damage);
        memcr.AssertRestoreRefusedAndTargetKilled(target, message);
        Assert.False(File.Exists(image), "the image of a killed target is of no more use and is removed");
        Directory.Delete(dir, recursive: true);
    }

    [Theory]
    [InlineData("")]
    [InlineData("-z")]
    [InlineData("--lazy")] // the process runs already when the fill reaches the damage
    public void RecordDamagedNearTheEndOfALargeImage_KillsTheTargetHalfWay_AndLeavesNoImage(string options)
    {
        // The restore checks each record as it reads it: most of the pages are written back when
        // the damage is found, and still the target must not run on the rest.
        using var target = FifoTarget.StartMemtest(heapMb: 256);
        string dir = Repo.NewScratchDir("damaged-late");
        string image = Path.Combine(dir, $"pages-{target.Pid}.img");
        using var memcr = MemcrProcess.Start(["-p", target.Pid.ToString(), "-d", dir, .. options.Split(' ', StringSplitOptions.RemoveEmptyEntries)]);
        memcr.WaitForPrompt();
        ImageDamage.Apply(image, "flip-last");
        memcr.AssertRestoreRefusedAndTargetKilled(target, "checksum mismatch in page record");
        Assert.False(File.Exists(image), "the image of a killed target is of no more use and is removed");
        Directory.Delete(dir, recursive: true);
    }

    [Fact]
    public void MemcrKilledWhileFrozen_LeavesTheTargetStopped()
    {
        using var target = FifoTarget.StartMemtest(heapMb: 16);
        using var memcr = MemcrProcess.Start("-p", target.Pid.ToString(), "-d", "/var/tmp");
        memcr.WaitForPrompt();
        memcr.Signal(Signals.SIGKILL);
        memcr.WaitForExit();
        target.AssertLeftFrozen();
        File.Delete($"/var/tmp/pages-{target.Pid}.img");
    }

    [Fact]
    public void MemcrInterruptedWhileFrozen_RestoresTheTarget()
    {
        using var target = FifoTarget.StartMemtest(heapMb: 16);
        using var memcr = MemcrProcess.Start("-p", target.Pid.ToString(), "-d", "/var/tmp");
        memcr.WaitForPrompt();
        memcr.Signal(Signals.SIGINT);
        Assert.True(memcr.WaitForExit() == 0, memcr.Output);
        Assert.Contains("restoring the target", memcr.Output);
        target.AssertIntact();
    }

    [Fact]
    public void BadOptions_AreRefusedClearly()
    {
        Assert.Contains("-p and -l cannot be combined", Fails("-p", "1", "-l", "9000"));
        Assert.Contains("invalid option -- 'q'", Fails("-q"));
    }

    [Fact]
    public void Timeout_AbandonsTheCheckpoint_AndLeavesTheTargetRunningUntouched()
    {
        using var target = FifoTarget.StartMemtest(heapMb: 64);
        string maps = target.Maps;
        string output = Fails("-p", target.Pid.ToString(CultureInfo.InvariantCulture), "-n", "-t", "0.005");
        Assert.Contains("checkpoint timed out after 0.005 s", output);
        AssertUntouched(target, maps);
    }
}
