using System.Globalization;
using System.Text.Json.Nodes;
using Memcr.IntegrationTests.Harness;

namespace Memcr.IntegrationTests;

/// <summary>CRIU mode: a process comes back with the identity it had, never with memcr's (root, every capability).</summary>
public sealed class CriuCredentialTests
{
    [Fact]
    public void UnprivilegedProcess_KeepsIdsGroupsCapabilitiesSecurebitsAndNoNewPrivs()
    {
        string dir = Repo.NewScratchDir("criu-creds");
        string images = Directory.CreateDirectory(Path.Combine(dir, "images")).FullName;
        string again = Directory.CreateDirectory(Path.Combine(dir, "again")).FullName;
        string pidFile = Path.Combine(dir, "pid");
        Repo.MustRun("setsid", "-f", "sh", "-c",
            $"echo $$ > {pidFile}; exec setpriv --reuid=65534 --regid=65534 --groups=100,1000 --inh-caps=+kill --ambient-caps=+kill " +
            "--bounding-set=-all,+kill,+chown --securebits=+noroot --nnp sleep 1000 </dev/null >/dev/null 2>&1");
        int pid = WaitForPid(pidFile);
        try
        {
            // The shell becomes setpriv, which drops its privileges and becomes sleep: wait for that.
            WaitForExec(pid, "sleep");
            CriuRun.WaitRunning(pid);
            var before = Identity(pid);
            CriuRun.MustDump(pid, images);
            CriuRun.WaitFree(pid);
            CriuRun.MustRestore(images);
            Assert.Equal(before, Identity(pid));
            // Securebits are not in /proc: a second dump of the restored process must say what the first did.
            CriuRun.MustDump(pid, again, "--leave-running");
            Assert.Equal(Creds(images, pid), Creds(again, pid));
        }
        finally
        {
            Syscalls.Kill(pid, Linux.Ptrace.Signals.SIGKILL);
        }
        CriuRun.WaitFree(pid);
        Directory.Delete(dir, recursive: true);
    }

    private static int WaitForPid(string file)
    {
        for (int i = 0; i < 500; i++)
        {
            if (File.Exists(file) && int.TryParse(File.ReadAllText(file).Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out int pid))
                return pid;
            Thread.Sleep(10);
        }
        throw new TimeoutException($"{file} never got a pid");
    }

    private static void WaitForExec(int pid, string comm)
    {
        for (int i = 0; i < 500; i++)
        {
            if (File.ReadAllText($"/proc/{pid}/comm").Trim() == comm)
                return;
            Thread.Sleep(10);
        }
        throw new TimeoutException($"pid {pid} never became {comm}");
    }

    private static string Identity(int pid) =>
        string.Join('\n', File.ReadAllLines($"/proc/{pid}/status").Where(l => l.Split(':')[0] is "Uid" or "Gid" or "Groups" or "CapInh" or "CapPrm" or "CapEff" or "CapBnd" or "CapAmb" or "NoNewPrivs"));

    private static string Creds(string images, int pid)
    {
        var (code, json) = MemcrProcess.Run("crit", "decode", "-i", Path.Combine(images, $"core-{pid}.img"));
        Assert.True(code == 0, json);
        var creds = JsonNode.Parse(json)!["entries"]![0]!["thread_core"]!["creds"]!;
        Assert.NotEqual("0", creds["secbits"]!.ToJsonString());
        return creds.ToJsonString();
    }
}
