using System.Buffers.Binary;
using System.Diagnostics;
using System.Globalization;
using Memcr.Client;
using Memcr.IntegrationTests.Harness;
using Memcr.Linux.Ptrace;

namespace Memcr.IntegrationTests;

/// <summary>
/// A signal sent to a checkpointed process right before its restore: the outcome must not depend
/// on the timing. A signal that terminates the process ends it without its memory being written
/// back; a handled one is delivered after the restore.
/// </summary>
public sealed class PendingSignalTests
{
    private static string P(int pid) => pid.ToString(CultureInfo.InvariantCulture);

    [Theory]
    [InlineData(Signals.SIGTERM, 50)]
    [InlineData(Signals.SIGINT, 20)]
    [InlineData(Signals.SIGHUP, 20)]
    public void TerminatingSignalThenEnter_AlwaysEndsTheTarget(int signal, int runs)
    {
        string dir = Repo.NewScratchDir("sigenter");
        for (int run = 0; run < runs; run++)
        {
            using var target = FifoTarget.StartIdle(1);
            using var memcr = MemcrProcess.Start("-p", P(target.Pid), "-d", dir);
            memcr.WaitForPrompt();
            // The signal and Enter back to back: no poll of memcr's can come between them.
            target.Signal(signal);
            memcr.PressEnter();
            int code = memcr.WaitForExit();
            string context = $"run {run}, exit {code}:\n{memcr.Output}";
            Assert.True(code != 0, context);
            Assert.True(memcr.Output.Contains($"target pid {target.Pid} terminated by {Signals.Name(signal)} while checkpointed; image removed", StringComparison.Ordinal), context);
            Assert.DoesNotContain("upload took", memcr.Output);
            Assert.True(target.WaitUntilDead(TimeSpan.FromSeconds(10)), context);
            Assert.Empty(Directory.GetFiles(dir));
        }
        Directory.Delete(dir);
    }

    [Theory]
    [InlineData(Signals.SIGTERM, 50)]
    [InlineData(Signals.SIGINT, 20)]
    [InlineData(Signals.SIGHUP, 20)]
    public async Task TerminatingSignalThenRestoreRequest_AlwaysEndsTheTarget(int signal, int runs)
    {
        string dir = Repo.NewScratchDir("sigrestore");
        using var daemon = Daemon.Start(dir);
        for (int run = 0; run < runs; run++)
        {
            using var target = FifoTarget.StartIdle(1);
            Assert.Equal(MemcrResponse.Ok, await daemon.Client.CheckpointAsync(target.Pid));
            using var s = daemon.Connect();
            var request = new byte[8];
            BinaryPrimitives.WriteInt32LittleEndian(request, 101);
            BinaryPrimitives.WriteInt32LittleEndian(request.AsSpan(4), target.Pid);
            target.Signal(signal);
            s.Send(request);
            var answer = new byte[4];
            Assert.Equal(4, s.Receive(answer));
            string context = $"run {run}:\n{daemon.Process.Output}";
            Assert.True(BinaryPrimitives.ReadInt32LittleEndian(answer) == -1, context);
            Assert.True(target.WaitUntilDead(TimeSpan.FromSeconds(10)), context);
            daemon.Process.WaitFor($"target pid {target.Pid} terminated by {Signals.Name(signal)} while checkpointed; image removed");
            Assert.Empty(Directory.GetFiles(dir, "pages-*"));
            Assert.Empty(Directory.GetFiles(dir, "memcr-*.journal"));
        }
        Assert.Equal(0, daemon.Stop());
        Directory.Delete(dir, recursive: true);
    }

    [Fact]
    public void HandledSigtermThenEnter_RestoresAndTheHandlerRunsAfterwards()
    {
        using var target = FifoTarget.StartIdle(4, catchTerm: true);
        string dir = Repo.NewScratchDir("sighandled");
        using var memcr = MemcrProcess.Start("-p", P(target.Pid), "-d", dir);
        memcr.WaitForPrompt();
        target.Signal(Signals.SIGTERM);
        memcr.PressEnter();
        Assert.True(memcr.WaitForExit() == 0, memcr.Output);
        Assert.Contains("upload took", memcr.Output);
        AssertHandledOnce(target);
        Directory.Delete(dir);
    }

    [Fact]
    public async Task HandledSigtermThenRestoreRequest_RestoresAndTheHandlerRunsAfterwards()
    {
        string dir = Repo.NewScratchDir("sighandled-service");
        using var daemon = Daemon.Start(dir);
        using var target = FifoTarget.StartIdle(4, catchTerm: true);
        Assert.Equal(MemcrResponse.Ok, await daemon.Client.CheckpointAsync(target.Pid));
        target.Signal(Signals.SIGTERM);
        Assert.Equal(MemcrResponse.Ok, await daemon.Client.RestoreAsync(target.Pid));
        AssertHandledOnce(target);
        Assert.Equal(0, daemon.Stop());
        Directory.Delete(dir, recursive: true);
    }

    /// <summary>The target is intact and its SIGTERM handler ran once, after it was let go.</summary>
    private static void AssertHandledOnce(FifoTarget target)
    {
        // The handler runs as soon as a thread of the restored process returns to user space;
        // the report is asked for until it shows (it is never asked before the restore).
        var sw = Stopwatch.StartNew();
        var report = target.AssertIntact();
        while (report["terms"] == "0" && sw.Elapsed < TimeSpan.FromSeconds(10))
            report = target.AssertIntact();
        Assert.Equal("1", report["terms"]);
    }
}
