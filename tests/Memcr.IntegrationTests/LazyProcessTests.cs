using System.Globalization;
using Memcr.IntegrationTests.Harness;
using Memcr.Linux.Ptrace;

namespace Memcr.IntegrationTests;

/// <summary>
/// What a lazily restored process does while its pages come back: read() into missing pages,
/// fork, mremap, madvise, signals, dying. memcr must follow it, and the process must never see a
/// wrong byte (lazytest's ticker checks random pages all along).
/// </summary>
public sealed class LazyProcessTests
{
    private static string P(int pid) => pid.ToString(CultureInfo.InvariantCulture);

    private static void AssertOk(Dictionary<string, string> report, string context) =>
        Assert.True(report["ok"] == "1", $"{string.Join(' ', report.Select(kv => kv.Key + "=" + kv.Value))}\n{context}");

    [Fact]
    public void Lazy_ReadIntoMissingPages_ForkMremapAndMadvise_WhileThePagesComeBack_AllSeeTheRightBytes()
    {
        using var target = FifoTarget.StartLazytest(mb: 512);
        string dir = Repo.NewScratchDir("lazyops");
        string[] fds = LazyRestoreTests.Fds(target);
        using var memcr = MemcrProcess.Start("-p", P(target.Pid), "-d", dir, "--lazy", "--verbose");
        memcr.WaitForPrompt();
        memcr.PressEnter();
        memcr.WaitFor("resumed in");
        // At once, while most of the 512 MiB is still to come: the reader's read() gets its bytes
        // through pages that are missing, then the process moves, discards and forks.
        target.Feed();
        var mutated = target.Ask("MUTATE");
        AssertOk(mutated, memcr.Output);
        Assert.Equal("0", mutated["child"]);
        Assert.Equal(0, memcr.WaitForExit());
        Assert.Contains("restore complete", memcr.Output);
        Assert.Contains($"pid {target.Pid} forked: serving the child's pages too", memcr.Output);
        var report = target.Ask("CHECK FED");
        AssertOk(report, memcr.Output);
        Assert.Equal("65536", report["fed"]);
        Assert.DoesNotContain(" um", LazyRestoreTests.VmFlags(target));
        Assert.Equal(fds, LazyRestoreTests.Fds(target));
        Assert.Empty(Directory.GetFiles(dir));
        Directory.Delete(dir);
    }

    [Fact]
    public void Lazy_SignalsSentWhileCheckpointed_ArriveAsWithAnEagerRestore()
    {
        using var target = FifoTarget.StartMemtest(heapMb: 64);
        string dir = Repo.NewScratchDir("lazysig");
        using var memcr = MemcrProcess.Start("-p", P(target.Pid), "-d", dir, "--lazy");
        memcr.WaitForPrompt();
        target.Signal(Signals.SIGUSR2);
        target.Signal(Signals.SIGUSR2); // standard signals coalesce, as the kernel does
        for (int i = 0; i < 3; i++)
            target.Signal(Signals.SIGRTMIN);
        memcr.PressEnter();
        Assert.Equal(0, memcr.WaitForExit());
        var report = target.AssertIntact(rt: 3);
        Assert.Equal("1", report["usr2"]);
        Assert.Equal("3", report["rt"]);
        Assert.Equal("0", report["eintr"]);
        Directory.Delete(dir, recursive: true);
    }

    [Theory]
    [InlineData("kill")]
    [InlineData("exit")]
    public void Lazy_TargetGoneDuringTheRestore_MemcrNoticesCleansUpAndExits(string how)
    {
        // It ends itself (SIGKILL or exit) on its first memory check after resuming: milliseconds
        // in, with most of its 512 MiB still to come back.
        using var target = FifoTarget.StartLazytest(mb: 512, onResume: how);
        string dir = Repo.NewScratchDir("lazygone");
        using var memcr = MemcrProcess.Start("-p", P(target.Pid), "-d", dir, "--lazy", "-n");
        Assert.True(target.WaitUntilDead(TimeSpan.FromSeconds(30)), memcr.Output);
        Assert.Equal(1, memcr.WaitForExit());
        Assert.Contains($"pid {target.Pid} has gone during the lazy restore; image removed", memcr.Output);
        Assert.DoesNotContain("restore complete", memcr.Output);
        Assert.Empty(Directory.GetFiles(dir));
        Directory.Delete(dir);
    }

    [Fact]
    public void Lazy_ForATargetThatCannotWaitOnMissingPages_IsRefusedWithNothingDone_OrEagerWithAuto()
    {
        bool unprivileged = File.ReadAllText("/proc/sys/vm/unprivileged_userfaultfd").Trim() != "0";
        using var target = FifoTarget.StartLazytest(mb: 16, uid: 65534);
        string dir = Repo.NewScratchDir("lazyrefuse");
        string maps = target.Maps;
        var (code, output) = MemcrProcess.Run("-p", P(target.Pid), "-d", dir, "-n", "--lazy");
        if (unprivileged)
        {
            // Where the sysctl lets any process wait on its missing pages, nothing is refused.
            Assert.True(code == 0, output);
        }
        else
        {
            Assert.Equal(1, code);
            Assert.Contains($"--lazy refused: pid {target.Pid} lacks CAP_SYS_PTRACE and /proc/sys/vm/unprivileged_userfaultfd is 0", output);
            Assert.Contains("nothing was done", output);
            Assert.DoesNotContain("seizing", output);
            Assert.Equal('S', target.Status.State);
            (code, output) = MemcrProcess.Run("-p", P(target.Pid), "-d", dir, "-n", "--lazy=auto");
            Assert.True(code == 0, output);
            Assert.Contains("the restore will be eager", output);
            Assert.Contains("upload took", output);
        }
        target.Feed();
        AssertOk(target.Ask("CHECK FED"), output);
        Assert.Equal(maps, target.Maps);
        Assert.Empty(Directory.GetFiles(dir));
        Directory.Delete(dir);
    }
}
