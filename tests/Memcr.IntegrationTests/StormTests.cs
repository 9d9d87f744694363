using Memcr.IntegrationTests.Harness;
using Memcr.Linux.Ptrace;

namespace Memcr.IntegrationTests;

/// <summary>Checkpoints while the target is busy creating threads or taking signals.</summary>
public sealed class StormTests
{
    [Fact]
    public void ThreadsCreatedDuringTheSeize_AreFrozenToo()
    {
        string exe = Gcc.Build("threadstorm");
        using var target = FifoTarget.Start("threadstorm", dir => [exe, dir]);
        for (int i = 0; i < 20; i++)
        {
            var (code, output) = MemcrProcess.Run("-p", target.Pid.ToString(), "-n", "-d", "/var/tmp");
            Assert.True(code == 0, output);
        }
        target.AssertIntact();
    }

    [Fact]
    public void SignalsSentDuringCheckpointAndRestore_AreAllDelivered()
    {
        using var target = FifoTarget.StartMemtest(heapMb: 16);
        const int PerRun = 100;
        int sent = 0;
        for (int run = 0; run < 5; run++)
        {
            using var memcr = MemcrProcess.Start("-p", target.Pid.ToString(), "-n", "-d", "/var/tmp");
            // Real-time signals queue one by one: each of them must arrive exactly once.
            for (int i = 0; i < PerRun; i++)
            {
                target.Signal(Signals.SIGRTMIN);
                target.Signal(Signals.SIGUSR2);
                sent++;
                if (i % 10 == 0)
                    Thread.Yield();
            }
            Assert.True(memcr.WaitForExit() == 0, memcr.Output);
        }
        var report = target.AssertIntact(rt: sent);
        Assert.Equal(sent.ToString(), report["rt"]);
        Assert.Equal("0", report["eintr"]);
    }
}
