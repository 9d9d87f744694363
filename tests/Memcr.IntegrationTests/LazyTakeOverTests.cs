using System.Diagnostics;
using System.Globalization;
using Memcr.Client;
using Memcr.IntegrationTests.Harness;
using Memcr.Linux.Ptrace;

namespace Memcr.IntegrationTests;

/// <summary>
/// memcr SIGKILLed in the middle of a lazy restore: the process keeps its userfaultfd, so its
/// threads wait for the missing pages instead of reading zeros, and a service started on the same
/// dump directory takes the restore over from the journal and finishes it.
/// </summary>
public sealed class LazyTakeOverTests
{
    private static string P(int pid) => pid.ToString(CultureInfo.InvariantCulture);

    /// <summary>
    /// The target's size: memcr is killed right after the process runs (<see cref="KillWhenLetRun"/>),
    /// and must still be serving then; 1 GiB comes back in about 400 ms here.
    /// </summary>
    private const int TakeOverMb = 1024;

    /// <summary>
    /// SIGKILLs <paramref name="pid"/>, the memcr restoring <paramref name="target"/> lazily, the
    /// moment it lets the target run (its TracerPid, non-zero while it is held, drops to 0); false
    /// if that did not happen within a minute. It polls /proc rather than reacting to memcr's
    /// output or to an answer, which wait on the test host's thread pool: a 1 GiB lazy restore is
    /// over in about 400 ms, and once that went by between memcr printing "resumed in" and the
    /// test seeing it.
    /// </summary>
    private static bool KillWhenLetRun(FifoTarget target, int pid)
    {
        bool held = false;
        var waited = Stopwatch.StartNew();
        while (waited.Elapsed < TimeSpan.FromMinutes(1))
        {
            // The tracer is one of memcr's threads, not always its main one.
            if (target.Status.TracerPid != 0)
                held = true;
            else if (held)
                return Syscalls.Kill(pid, Signals.SIGKILL) == 0;
            Thread.Sleep(1);
        }
        return false;
    }

    /// <summary>A service on <paramref name="dir"/> finishes the restore; the process ends intact with nothing of ours left.</summary>
    private static async Task AssertTakenOverAndIntact(FifoTarget target, string dir, string flags, string[] fds)
    {
        Assert.True(target.IsAlive);
        // Its reader's read() lands in pages nobody serves now: it waits, as do its other threads
        // (and the FIFO stays open until the service has served them: see FeedKeepingOpen).
        using (var feed = target.FeedKeepingOpen())
        using (var daemon = Daemon.Start(dir))
        {
            await LazyRestoreTests.WaitUntilServiceHoldsNothing(daemon);
            Assert.Contains("its lazy restore was left unfinished by a previous memcr: taking it over", daemon.Process.Output);
            Assert.Contains("restore complete", daemon.Process.Output);
            var report = target.Ask("CHECK FED");
            Assert.True(report["ok"] == "1", $"{string.Join(' ', report.Select(kv => kv.Key + "=" + kv.Value))}\n{daemon.Process.Output}");
            Assert.Equal("65536", report["fed"]);
            Assert.Equal(0, daemon.Stop());
        }
        Assert.Equal(flags, LazyRestoreTests.VmFlags(target));
        Assert.Equal(fds, LazyRestoreTests.Fds(target));
        Assert.Empty(Directory.GetFiles(dir));
    }

    [Fact]
    public async Task MemcrKilledDuringALazyRestore_NextMemcrSaysWhatToDo_AndAServiceFinishesIt()
    {
        using var target = FifoTarget.StartLazytest(mb: TakeOverMb);
        string dir = Repo.NewScratchDir("lazykill");
        string flags = LazyRestoreTests.VmFlags(target);
        string[] fds = LazyRestoreTests.Fds(target);
        using (var memcr = MemcrProcess.Start("-p", P(target.Pid), "-d", dir, "--lazy", "-n"))
        {
            Assert.True(KillWhenLetRun(target, memcr.Pid), $"memcr was not killed as pid {target.Pid} ran again:\n{memcr.Output}");
            memcr.WaitForExit();
            Assert.DoesNotContain("restore complete", memcr.Output);
        }
        string journal = Path.Combine(dir, $"memcr-{target.Pid}.journal");
        Assert.Contains("\"lazy_fd\"", File.ReadAllText(journal));

        var (code, output) = MemcrProcess.Run("-p", P(target.Pid), "-d", dir);
        Assert.Equal(1, code);
        Assert.Contains($"pid {target.Pid} is waiting for pages of a lazy restore whose memcr died (journal {journal})", output);
        Assert.Contains($"start a memcr service on that directory (memcr -l PORT|PATH -d {dir})", output);
        Assert.Equal(0, target.Status.TracerPid);

        await AssertTakenOverAndIntact(target, dir, flags, fds);
        Directory.Delete(dir);
    }

    [Fact]
    public async Task ServiceKilledDuringALazyRestore_ANewServiceFinishesIt()
    {
        using var target = FifoTarget.StartLazytest(mb: TakeOverMb);
        string dir = Repo.NewScratchDir("lazysvckill");
        string flags = LazyRestoreTests.VmFlags(target);
        string[] fds = LazyRestoreTests.Fds(target);
        using (var first = Daemon.Start(dir, extra: ["--lazy"]))
        {
            Assert.Equal(MemcrResponse.Ok, await first.Client.CheckpointAsync(target.Pid));
            var restore = first.Client.RestoreAsync(target.Pid);
            Assert.True(KillWhenLetRun(target, first.Pid), $"the service was not killed as pid {target.Pid} ran again:\n{first.Process.Output}");
            // It answers as the process runs: the answer may or may not have left before it died.
            try
            {
                Assert.Equal(MemcrResponse.Ok, await restore);
            }
            catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException or EndOfStreamException)
            {
            }
            first.Process.WaitForExit();
            Assert.DoesNotContain("restore complete", first.Process.Output);
        }
        await AssertTakenOverAndIntact(target, dir, flags, fds);
        Directory.Delete(dir);
    }
}
