using System.Globalization;
using System.Text.RegularExpressions;
using Memcr.IntegrationTests.Harness;
using Memcr.Linux.Ptrace;

namespace Memcr.IntegrationTests;

/// <summary>
/// CRIU mode's refusals and failures: each says what, where and why in one line; a refused or
/// failed dump leaves the tree running untouched with no partial images; a refused or failed
/// restore leaves no process behind and the images as they were, so that it can be retried.
/// </summary>
public sealed partial class CriuErrorTests
{
    private static string P(int pid) => pid.ToString(CultureInfo.InvariantCulture);

    private static string Fails(params string[] args)
    {
        var (code, output) = MemcrProcess.Run(args);
        Assert.True(code != 0, $"memcr {string.Join(' ', args)} succeeded:\n{output}");
        Assert.Single(output.Split('\n', StringSplitOptions.RemoveEmptyEntries), l => l.Contains("Error:", StringComparison.Ordinal));
        return output;
    }

    /// <summary>A restore of <paramref name="images"/> that must be refused, leaving them as they were; its output.</summary>
    private static string RestoreFails(string images)
    {
        string before = CriuRun.Fingerprint(images);
        var output = Fails("restore", "-D", images, "-d");
        Assert.Equal(before, CriuRun.Fingerprint(images));
        return output;
    }

    /// <summary>The tree runs on: not traced, not stopped, and the tree program still ticks.</summary>
    private static void AssertRunningUntouched(TreeProgram tree)
    {
        foreach (int pid in new[] { tree.Pid, tree.Child })
        {
            Assert.Equal("0", CriuRun.Status(pid, "TracerPid"));
            foreach (var tid in CriuRun.Tids(pid))
                Assert.Matches("^[SR]", File.ReadAllLines($"/proc/{pid}/task/{tid}/status").First(l => l.StartsWith("State:", StringComparison.Ordinal))[6..].Trim());
        }
        int last = tree.ParentTicks().Last();
        CriuRun.WaitForLine(tree.Log, l => l.StartsWith($"parent {tree.Pid} tick {last + 1} ", StringComparison.Ordinal));
    }

    [Fact]
    public void Dump_OfMemcrItself_IsRefused()
    {
        var (code, output) = Repo.Run("sh", "-c", $"exec {Repo.Memcr} dump -t $$ -D {Repo.NewScratchDir("criu-self")}");
        Assert.NotEqual(0, code);
        Assert.Contains("is memcr itself", output);
    }

    [Fact]
    public void Dump_OfAKernelThread_IsRefused() =>
        Assert.Contains("pid 2 (kthreadd) is a kernel thread", Fails("dump", "-t", "2", "-D", Repo.NewScratchDir("criu-kthread")));

    [Fact]
    public void Dump_OfNoProcess_IsRefused()
    {
        int pidMax = int.Parse(File.ReadAllText("/proc/sys/kernel/pid_max").Trim(), CultureInfo.InvariantCulture);
        int pid = Enumerable.Range(1, 1000).Select(i => pidMax - i).First(p => !Directory.Exists($"/proc/{p}"));
        Assert.Contains($"pid {pid}: no such process", Fails("dump", "-t", P(pid), "-D", Repo.NewScratchDir("criu-nopid")));
    }

    [Fact]
    public void Dump_OfAZombie_IsRefused_AndOfATreeHoldingOne()
    {
        string dir = Repo.NewScratchDir("criu-zombie");
        string pidFile = Path.Combine(dir, "pid");
        Repo.MustRun("setsid", "-f", "sh", "-c", $"echo $$ > {pidFile}; exec bash -c 'sleep 0.1 & exec sleep 1000' </dev/null >/dev/null 2>&1");
        int parent = WaitForPid(pidFile);
        try
        {
            int zombie = WaitFor(() => Children(parent).FirstOrDefault(c => CriuRun.Status(c, "State").StartsWith('Z')), "the zombie");
            Assert.Contains($"pid {zombie} (sleep) is a zombie", Fails("dump", "-t", P(zombie), "-D", Directory.CreateDirectory(Path.Combine(dir, "a")).FullName));
            var output = Fails("dump", "-t", P(parent), "-D", Directory.CreateDirectory(Path.Combine(dir, "b")).FullName);
            Assert.Contains($"pid {zombie}, a child of pid {parent}, is a zombie", output);
            Assert.Contains("left running untouched", output);
            Assert.Equal("0", CriuRun.Status(parent, "TracerPid"));
            Assert.StartsWith("S", CriuRun.Status(parent, "State"));
            Assert.Empty(Directory.GetFileSystemEntries(Path.Combine(dir, "b")));
        }
        finally
        {
            Syscalls.Kill(parent, Signals.SIGKILL);
        }
    }

    [Fact]
    public void Dump_OfATracedProcess_IsRefused_AndTheTracerKeepsIt()
    {
        using var target = FifoTarget.StartMemtest(heapMb: 8);
        using var holder = MemcrProcess.Start("-p", P(target.Pid));
        holder.WaitForPrompt();
        int tracer = int.Parse(CriuRun.Status(target.Pid, "TracerPid"), CultureInfo.InvariantCulture);
        Assert.NotEqual(0, tracer);
        var output = Fails("dump", "-t", P(target.Pid), "-D", Repo.NewScratchDir("criu-traced"));
        Assert.Contains($"is already traced by pid {tracer}", output);
        holder.PressEnter();
        Assert.Equal(0, holder.WaitForExit());
        target.AssertIntact();
    }

    [Fact]
    public void Dump_OfANetlinkSocket_IsRefused_NamingPidAndFd() =>
        DumpOfPythonIsRefused("criu-socket", "import socket,time; s=socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)", pid =>
        {
            int fd = Directory.GetFiles($"/proc/{pid}/fd").Select(f => (Fd: int.Parse(Path.GetFileName(f), CultureInfo.InvariantCulture), Link: new FileInfo(f).LinkTarget))
                .First(x => x.Link?.StartsWith("socket:", StringComparison.Ordinal) == true).Fd;
            return $@"fd {fd} of pid {pid} \(socket:\[\d+\]\) is a socket that is neither UNIX, TCP nor UDP";
        });

    [Fact]
    public void Dump_OfALease_IsRefused_EvenWithFileLocks()
    {
        string leased = Path.Combine(Repo.NewScratchDir("criu-leased"), "leased");
        File.WriteAllText(leased, "");
        DumpOfPythonIsRefused("criu-lease", $"import fcntl; f=open(\"{leased}\"); fcntl.fcntl(f, fcntl.F_SETLEASE, fcntl.F_RDLCK)",
            pid => $@"fd \d+ of pid {pid} \({Regex.Escape(leased)}\) holds a read lease \(active\): leases are not supported", "--file-locks");
    }

    /// <summary>
    /// Runs Python <paramref name="setup"/> in a detached process that then sleeps, has memcr dump
    /// refuse it with a message matching <paramref name="message"/> (given the pid), and checks
    /// that it runs on untouched and that nothing was written.
    /// </summary>
    private static void DumpOfPythonIsRefused(string name, string setup, Func<int, string> message, params string[] extra)
    {
        string dir = Repo.NewScratchDir(name);
        string pidFile = Path.Combine(dir, "pid"), ready = Path.Combine(dir, "out");
        Repo.MustRun("setsid", "-f", "sh", "-c",
            $"echo $$ > {pidFile}; exec python3 -c '{setup}; import time; print(\"ok\", flush=True); time.sleep(1000)' </dev/null >{ready} 2>&1");
        int pid = WaitForPid(pidFile);
        try
        {
            CriuRun.WaitForLine(ready, l => l == "ok");
            string images = Directory.CreateDirectory(Path.Combine(dir, "images")).FullName;
            var output = Fails(["dump", "-t", P(pid), "-D", images, .. extra]);
            Assert.Matches(message(pid), output);
            Assert.Contains($"pid {pid} was left running untouched", output);
            Assert.Equal("0", CriuRun.Status(pid, "TracerPid"));
            Assert.StartsWith("S", CriuRun.Status(pid, "State"));
            Assert.Empty(Directory.GetFileSystemEntries(images));
        }
        finally
        {
            Syscalls.Kill(pid, Signals.SIGKILL);
        }
    }

    [Fact]
    public void Dump_IntoAReadOnlyDirectory_IsRefused()
    {
        using var tree = TreeProgram.Start("criu-ro");
        using var mount = TmpfsMount.Create("ro,size=1m");
        Assert.Contains($"dump dir {mount.Path} is not writable", Fails("dump", "-t", P(tree.Pid), "-D", mount.Path));
        AssertRunningUntouched(tree);
    }

    [Fact]
    public void Dump_OntoAFullDisk_RemovesThePartialImages_AndTheTargetRunsOn()
    {
        using var target = FifoTarget.StartMemtest(heapMb: 64);
        using var mount = TmpfsMount.Create("size=8m");
        var output = Fails("dump", "-t", P(target.Pid), "-D", mount.Path);
        Assert.Contains("no space left on device", output, StringComparison.OrdinalIgnoreCase);
        Assert.Contains("left running untouched", output);
        Assert.Empty(Directory.GetFileSystemEntries(mount.Path));
        Assert.Equal(0, target.Status.TracerPid);
        target.AssertIntact();
    }

    [Fact]
    public void Restore_WhileThePidIsTaken_IsRefused_NamingWhoHasIt()
    {
        using var tree = TreeProgram.Start("criu-pid-taken");
        CriuRun.MustDump(tree.Pid, tree.Images, "--leave-running");
        var output = RestoreFails(tree.Images);
        Assert.Contains($"pid {tree.Pid} is in use by 'tree'", output);
        AssertRunningUntouched(tree);
    }

    [Theory]
    [InlineData("data grew", "tree.data changed since the dump", "size 900 then, 901 now")]
    [InlineData("data gone", "tree.data, fd 6 of pid", "is gone since the dump")]
    [InlineData("program rebuilt", "tree changed since the dump", "build-id")]
    public void Restore_AfterAFileChanged_IsRefused(string change, string what, string why)
    {
        using var tree = TreeProgram.Start("criu-changed");
        CriuRun.MustDump(tree.Pid, tree.Images);
        CriuRun.WaitFree(tree.Pid, tree.Child);
        string data = Path.Combine(tree.Dir, "tree.data"), exe = Path.Combine(tree.Dir, "tree");
        switch (change)
        {
            case "data grew":
                File.AppendAllText(data, "x");
                break;
            case "data gone":
                File.Delete(data);
                break;
            default:
                ChangeBuildId(exe);
                break;
        }
        var output = RestoreFails(tree.Images);
        Assert.Contains(what, output);
        Assert.Contains(why, output);
        Assert.Contains("nothing was restored", output);
        Assert.False(Directory.Exists($"/proc/{tree.Pid}"));
        Assert.False(Directory.Exists($"/proc/{tree.Child}"));
    }

    [Theory]
    [InlineData("inventory.img", "delete", "inventory.img is missing")]
    [InlineData("pstree.img", "truncate", "pstree.img")]
    [InlineData("core-PID.img", "delete", "core-PID.img")]
    [InlineData("mm-PID.img", "magic", "mm-PID.img")]
    [InlineData("pagemap-PID.img", "truncate", "pagemap-PID.img")]
    [InlineData("files.img", "length", "files.img")]
    public void Restore_OfADamagedImage_IsRefused_NamingTheImage(string image, string damage, string message)
    {
        using var tree = TreeProgram.Start("criu-damaged");
        CriuRun.MustDump(tree.Pid, tree.Images);
        CriuRun.WaitFree(tree.Pid, tree.Child);
        ImageDamage.Apply(Path.Combine(tree.Images, image.Replace("PID", P(tree.Pid), StringComparison.Ordinal)), damage);
        var output = RestoreFails(tree.Images);
        Assert.Contains(message.Replace("PID", P(tree.Pid), StringComparison.Ordinal), output);
        Assert.Contains("nothing was restored", output);
        Assert.False(Directory.Exists($"/proc/{tree.Pid}"));
        Assert.False(Directory.Exists($"/proc/{tree.Child}"));
    }

    [Fact]
    public void Restore_FailingHalfWay_KillsWhatItMade_AndCanBeRetried()
    {
        using var tree = TreeProgram.Start("criu-halfway");
        CriuRun.MustDump(tree.Pid, tree.Images);
        CriuRun.WaitFree(tree.Pid, tree.Child);
        // The pages are read while the processes are being made: cut short, the parent is made, the child is not.
        string pages = Path.Combine(tree.Images, "pages-1.img");
        string saved = Path.Combine(tree.Dir, "pages-1.saved");
        File.Copy(pages, saved);
        using (var f = File.OpenHandle(pages, FileMode.Open, FileAccess.ReadWrite))
            RandomAccess.SetLength(f, RandomAccess.GetLength(f) - 4096);
        var output = RestoreFails(tree.Images);
        Assert.Contains("pages-1.img", output);
        Assert.Contains("the partly restored processes were killed, the images are unchanged", output);
        CriuRun.WaitFree(tree.Pid, tree.Child);

        File.Copy(saved, pages, overwrite: true);
        CriuRun.MustRestore(tree.Images);
        Assert.Equal(P(tree.Pid), CriuRun.Status(tree.Child, "PPid"));
        int ticks = tree.ParentTicks().Last();
        CriuRun.WaitForLine(tree.Log, l => l.StartsWith($"parent {tree.Pid} tick {ticks + 1} ", StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("dump", "-sys_ptrace", "memcr dump needs CAP_SYS_PTRACE")]
    [InlineData("restore", "-sys_ptrace", "memcr restore needs CAP_SYS_PTRACE")]
    [InlineData("restore", "-sys_admin,-checkpoint_restore", "memcr restore needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN")]
    public void WithoutACapability_SaysWhichOne(string verb, string drop, string message)
    {
        using var tree = TreeProgram.Start("criu-caps");
        if (verb == "restore")
        {
            CriuRun.MustDump(tree.Pid, tree.Images);
            CriuRun.WaitFree(tree.Pid, tree.Child);
        }
        string before = CriuRun.Fingerprint(tree.Images);
        string[] args = verb == "dump" ? ["dump", "-t", P(tree.Pid), "-D", tree.Images] : ["restore", "-D", tree.Images, "-d"];
        var (code, output) = Repo.Run("setpriv", ["--bounding-set", drop, "--inh-caps", drop, Repo.Memcr, .. args]);
        Assert.True(code != 0, output);
        Assert.Contains(message, output);
        Assert.Equal(before, CriuRun.Fingerprint(tree.Images));
        if (verb == "dump")
            AssertRunningUntouched(tree);
        else
            Assert.False(Directory.Exists($"/proc/{tree.Pid}"));
    }

    /// <summary>Overwrites one byte of an ELF file's build-id note: the same size, another build.</summary>
    private static void ChangeBuildId(string exe)
    {
        var (_, notes) = Repo.Run("readelf", "-n", exe);
        var hex = BuildId().Match(notes).Groups[1].Value;
        var id = Convert.FromHexString(hex);
        var bytes = File.ReadAllBytes(exe);
        int at = bytes.AsSpan().IndexOf(id);
        Assert.True(at > 0, $"build-id {hex} not found in {exe}");
        bytes[at] ^= 0xff;
        File.WriteAllBytes(exe, bytes);
    }

    private static int WaitForPid(string file) => WaitFor(() =>
        File.Exists(file) && int.TryParse(File.ReadAllText(file).Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out int pid) ? pid : 0, file);

    private static int WaitFor(Func<int> found, string what)
    {
        for (int i = 0; i < 1000; i++)
        {
            int v = found();
            if (v != 0)
                return v;
            Thread.Sleep(10);
        }
        throw new TimeoutException($"never found {what}");
    }

    private static List<int> Children(int pid) =>
        File.ReadAllText($"/proc/{pid}/task/{pid}/children").Split(' ', StringSplitOptions.RemoveEmptyEntries).Select(x => int.Parse(x, CultureInfo.InvariantCulture)).ToList();

    [GeneratedRegex(@"Build ID: ([0-9a-f]+)")]
    private static partial Regex BuildId();
}
