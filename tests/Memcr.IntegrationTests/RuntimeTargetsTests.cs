using Memcr.IntegrationTests.Harness;

namespace Memcr.IntegrationTests;

public sealed class RuntimeTargetsTests
{
    private static void CheckpointTwice(FifoTarget target)
    {
        target.AssertIntact();
        long before = target.Status.RssAnonKb;
        using (var memcr = MemcrProcess.Start("-p", target.Pid.ToString(), "-d", "/var/tmp"))
        {
            memcr.WaitForPrompt();
            Assert.True(target.Status.RssAnonKb < before / 4, $"RssAnon {before} kB -> {target.Status.RssAnonKb} kB");
            memcr.PressEnter();
            Assert.True(memcr.WaitForExit() == 0, memcr.Output);
        }
        target.AssertIntact();
        var (code, output) = MemcrProcess.Run("-p", target.Pid.ToString(), "-n", "-f", "-d", "/var/tmp");
        Assert.True(code == 0, output);
        target.AssertIntact();
    }

    [Fact]
    public void DotnetProcess_SurvivesCheckpointAndRestore()
    {
        string dll = Path.Combine(AppContext.BaseDirectory, "DotnetTarget.dll");
        using var target = FifoTarget.Start("dotnet", dir => ["dotnet", dll, dir]);
        CheckpointTwice(target);
    }

    [Fact]
    public void PythonProcess_SurvivesCheckpointAndRestore()
    {
        string script = Path.Combine(Repo.Root, "tests", "targets", "pytarget.py");
        using var target = FifoTarget.Start("python", dir => ["python3", script, dir]);
        CheckpointTwice(target);
    }
}
