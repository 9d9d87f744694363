using System.Globalization;
using System.Text.RegularExpressions;
using Memcr.IntegrationTests.Harness;
using Memcr.Linux.Kernel;
using Memcr.Linux.Ptrace;

namespace Memcr.IntegrationTests;

/// <summary>CRIU mode, the scenarios people run first: memcr dump, the program ends, memcr restore, it carries on.</summary>
public sealed partial class CriuModeTests
{
    private static string P(int pid) => pid.ToString(CultureInfo.InvariantCulture);

    [Fact]
    public void TerminalJob_ComesBackInItsTerminal_WithItsPid_AndCtrlCEndsIt()
    {
        string dir = Repo.NewScratchDir("criu-counter");
        string images = Directory.CreateDirectory(Path.Combine(dir, "images")).FullName;
        CriuRun.BuildProgram("counter", dir);
        using var tty = Tmux.Start(dir);
        try
        {
            tty.Line("./counter");
            string screen = tty.WaitFor("2\n", after: "My PID is");
            int pid = int.Parse(MyPid().Match(screen).Groups[1].Value, CultureInfo.InvariantCulture);

            CriuRun.MustDump(pid, images, "--shell-job");
            tty.WaitFor("Killed");
            CriuRun.WaitFree(pid);
            int last = Numbers(tty.Screen, "My PID is").Max();

            tty.Line($"{Repo.Memcr} restore -D {images} --shell-job; echo EXIT=$?");
            screen = tty.WaitFor($"{last + 2}\n", after: "restore -D");
            var after = Numbers(screen, "restore -D");
            Assert.Equal(last + 1, after[0]);
            Assert.True(Directory.Exists($"/proc/{pid}"), $"the counter must come back as pid {pid}");
            Assert.Equal(tty.Tty, new FileInfo($"/proc/{pid}/fd/1").LinkTarget);
            tty.Keys("C-c");
            tty.WaitFor("EXIT=130", after: "restore -D");
            CriuRun.WaitFree(pid);
        }
        finally
        {
            CriuRun.KillEverythingIn(dir);
        }
    }

    [Fact]
    public void ShellScriptInTheBackground_GoesOnCounting_AndASecondRestoreStartsFromTheDumpAgain()
    {
        string dir = Repo.NewScratchDir("criu-count-sh");
        string images = Directory.CreateDirectory(Path.Combine(dir, "images")).FullName;
        string log = Path.Combine(dir, "count.log");
        string script = File.ReadAllText(Path.Combine(Repo.Root, "tests", "fixtures", "criu-images", "programs", "count.sh"))
            .Replace("/tmp/criu-fixture/count.log", log, StringComparison.Ordinal);
        File.WriteAllText(Path.Combine(dir, "count.sh"), script);
        File.SetUnixFileMode(Path.Combine(dir, "count.sh"), (UnixFileMode)0x1ed);
        using var tty = Tmux.Start(dir);
        try
        {
            tty.Line("./count.sh &");
            CriuRun.WaitForLine(log, l => l == "Count: 2");
            int bash = CriuRun.ProcessesIn(dir).Single(p => File.ReadAllText($"/proc/{p}/cmdline").Contains("count.sh", StringComparison.Ordinal));
            var sleep = Children(bash);
            Assert.Single(sleep);

            CriuRun.MustDump(bash, images, "--shell-job");
            int dumped = Counts(log).Last();
            CriuRun.WaitFree(bash, sleep[0]);
            for (int round = 0; round < 2; round++)
            {
                tty.Line($"{Repo.Memcr} restore -D {images} --shell-job -d; echo RESTORED=$?");
                tty.WaitFor("RESTORED=0", after: "RESTORED=$?");
                var lines = CriuRun.WaitForLines(log, ls => ls.Count(l => l == $"Count: {dumped + 2}") == 1 + round);
                // Every restore goes on from the count the dump saw.
                Assert.Equal(1 + round, lines.Count(l => l == $"Count: {dumped + 1}"));
                Assert.Equal(P(bash), File.ReadAllText($"/proc/{bash}/stat").Split(' ')[0]);
                var children = Children(bash);
                Syscalls.Kill(bash, Signals.SIGKILL);
                foreach (int child in children)
                    Syscalls.Kill(child, Signals.SIGKILL);
                CriuRun.WaitFree(bash, sleep[0]);
            }
        }
        finally
        {
            CriuRun.KillEverythingIn(dir);
        }
        Directory.Delete(dir, recursive: true);
    }

    [Fact]
    public void ProcessTree_KeepsPidsThreadsPipeOffsetHandlerTimerAndPendingSignal()
    {
        using var tree = TreeProgram.Start("criu-tree");
        Syscalls.Kill(tree.Pid, 10); // SIGUSR1: its handler counts it
        CriuRun.WaitForLine(tree.Log, l => l.Contains("usr1=1", StringComparison.Ordinal));
        var tids = CriuRun.Tids(tree.Pid);
        Assert.Equal(4, tids.Count);

        CriuRun.MustDump(tree.Pid, tree.Images);
        int ticks = tree.ParentTicks().Last();
        CriuRun.WaitFree([.. tids, tree.Child]);
        CriuRun.MustRestore(tree.Images);

        Assert.Equal(tids, CriuRun.Tids(tree.Pid));
        Assert.Equal(P(tree.Pid), CriuRun.Status(tree.Child, "PPid"));
        // Remote syscalls pin a task to one CPU while they run; none of it stays.
        string cpus = File.ReadAllLines("/proc/self/status").Single(l => l.StartsWith("Cpus_allowed_list:", StringComparison.Ordinal));
        Assert.All(CpuLists([tree.Pid, tree.Child]), l => Assert.Equal(cpus, l));
        var lines = CriuRun.WaitForLine(tree.Log, l => l.StartsWith($"parent {tree.Pid} tick {ticks + 2} ", StringComparison.Ordinal));
        // The restored parent goes on from the dump: handler count, file offset and timer with it.
        string next = Assert.Single(lines, l => l.StartsWith($"parent {tree.Pid} tick {ticks + 1} ", StringComparison.Ordinal));
        Assert.Contains("usr1=1 ", next);
        Assert.EndsWith("pos=90", next);
        int alarms1 = Alarms(next);
        int alarms2 = Alarms(lines.Last(l => l.StartsWith($"parent {tree.Pid} tick {ticks + 2} ", StringComparison.Ordinal)));
        Assert.True(alarms2 > alarms1, "the interval timer must keep firing");
        Assert.True(CriuRun.WaitForLine(tree.Log, l => l.StartsWith($"child {tree.Child} tick", StringComparison.Ordinal)).Length > 0);
        // SIGUSR2 is still blocked and pending; the pipe still holds its 15 bytes.
        Assert.NotEqual(0UL, Convert.ToUInt64(CriuRun.Status(tree.Pid, "SigPnd"), 16) & (1UL << 11));
        Assert.NotEqual(0UL, Convert.ToUInt64(CriuRun.Status(tree.Pid, "SigBlk"), 16) & (1UL << 11));
        using (var pidfd = ProcessCalls.PidfdOpen(tree.Pid))
        using (var pipe = ProcessCalls.TakeFd(pidfd, tree.Pid, 3))
            Assert.Equal(15, FileCalls.Available(pipe, "the tree's pipe"));
        Assert.Contains("pos:\t90", File.ReadAllText($"/proc/{tree.Pid}/fdinfo/6"));
    }

    [Fact]
    public void ChildSharesItsCopyOnWritePagesWithItsParentAgain()
    {
        using var tree = TreeProgram.Start("criu-cow");
        AssertShared(tree.Child, "before the dump");
        CriuRun.MustDump(tree.Pid, tree.Images, "--leave-running");
        AssertShared(tree.Child, "after a dump that left it running");
        tree.Kill();
        var (code, output) = CriuRun.Restore(tree.Images);
        Assert.True(code == 0, output);
        // The child's 8 MiB heap (2048 pages) came from the parent at fork: written once, shared again.
        var shared = SharedPages().Match(output);
        Assert.True(shared.Success, output);
        Assert.True(int.Parse(shared.Groups[1].Value, CultureInfo.InvariantCulture) >= 2048, output);
        AssertShared(tree.Child, "after the restore");
    }

    private static void AssertShared(int pid, string when)
    {
        long pss = Pss(pid), rss = Rss(pid);
        Assert.True(pss < rss * 3 / 4, $"{when}: pid {pid} has Pss {pss} kB of Rss {rss} kB, its pages are not shared with its parent");
    }

    [Fact]
    public void LeaveRunning_TheTreeGoesOn_AndARestoreAfterwardsResumesFromTheDump()
    {
        using var tree = TreeProgram.Start("criu-leave");
        var cpus = CpuLists([tree.Pid, tree.Child]);
        CriuRun.MustDump(tree.Pid, tree.Images, "--leave-running");
        Assert.Equal(cpus, CpuLists([tree.Pid, tree.Child]));
        int ticks = tree.ParentTicks().Last();
        CriuRun.WaitForLine(tree.Log, l => l.StartsWith($"parent {tree.Pid} tick {ticks + 2} ", StringComparison.Ordinal));
        Assert.Equal("0", CriuRun.Status(tree.Pid, "TracerPid"));
        tree.Kill();
        CriuRun.MustRestore(tree.Images);
        var lines = CriuRun.WaitForLine(tree.Log, l => l.StartsWith($"parent {tree.Pid} tick {ticks + 3} ", StringComparison.Ordinal)
            && tree.ParentTicks().Count(t => t == ticks + 1) == 2);
        Assert.Equal(2, lines.Count(l => l.StartsWith($"parent {tree.Pid} tick {ticks + 1} ", StringComparison.Ordinal)));
    }

    [Fact]
    public void PythonProgram_IsDumpedAndRestored_AndKeepsWorking() =>
        DumpAndRestore(FifoTarget.Start("criu-python", dir => ["python3", Path.Combine(Repo.Root, "tests", "targets", "pytarget.py"), dir]), exact: true);

    /// <summary>
    /// A thread holds data in the upper half of a vector register all the time, as one inside an
    /// AVX memcmp does: restored with its XMM registers only, it finds the register cleared (the
    /// Python program above did, once in about twenty runs, in a worker stopped mid-memcmp).
    /// </summary>
    [Fact]
    public void AThreadsVectorRegisters_ComeBackWhole()
    {
        string exe = Gcc.Build("vectors");
        DumpAndRestore(FifoTarget.Start("criu-vectors", dir => [exe, dir]), exact: true);
    }

    [Fact]
    public void DotnetProgram_WithDefaultSettings_IsDumpedAndRestored_AndKeepsWorking() =>
        // .NET locks every file it opens for writing (flock): as with CRIU, that takes --file-locks.
        DumpAndRestore(FifoTarget.Start("criu-dotnet", dir => ["dotnet", Path.Combine(AppContext.BaseDirectory, "DotnetTarget.dll"), dir]), exact: true, "--file-locks");

    [Fact]
    public void EveryKindOfDescriptor_ComesBackWorking()
    {
        string exe = Gcc.Build("fdkinds");
        using var target = FifoTarget.Start("criu-fdkinds", dir => [exe, dir]);
        AssertKindsWork(target, "before the dump");
        // Long enough for the 100 ms timer to expire unread: the kernel then holds it disarmed
        // with an expiration waiting, the state a restore finds hardest to rebuild.
        Thread.Sleep(300);
        var tids = CriuRun.Tids(target.Pid);
        string images = Repo.NewScratchDir("criu-images");
        CriuRun.MustDump(target.Pid, images);
        CriuRun.WaitFree([.. tids]);
        File.Delete(Path.Combine(target.Dir, "created"));
        CriuRun.MustRestore(images);
        AssertKindsWork(target, "after the restore");
        Directory.Delete(images, recursive: true);
    }

    /// <summary>Gives fdkinds something on each descriptor (a new file, a write to the watched one, a connection) and has it check them all.</summary>
    private static void AssertKindsWork(FifoTarget target, string when)
    {
        string created = Path.Combine(target.Dir, "created");
        File.Delete(created);
        File.WriteAllText(created, "");
        File.AppendAllText(Path.Combine(target.Dir, "watched"), "x");
        using var client = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.Unix, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Unspecified);
        client.Connect(new System.Net.Sockets.UnixDomainSocketEndPoint(Path.Combine(target.Dir, "sock")));
        var report = target.Check();
        Assert.True(report["ok"] == "1", $"{when}: these do not work: {report["bad"]}");
        var hello = new byte[2];
        Assert.Equal(2, client.Receive(hello));
    }

    [Fact]
    public void BigProcess_OneGiB_EveryByteChecked() => DumpAndRestore(FifoTarget.StartMemtest(heapMb: 1024), exact: false);

    /// <summary>
    /// Dumps a FIFO-protocol target, restores it, and has it check all its memory. A sleep the dump
    /// interrupted returns EINTR after restore (as with CRIU): memtest counts those, so for it only
    /// memory and worker errors count.
    /// </summary>
    private static void DumpAndRestore(FifoTarget target, bool exact, params string[] extra)
    {
        using (target)
        {
            target.AssertIntact();
            var tids = CriuRun.Tids(target.Pid);
            string images = Repo.NewScratchDir("criu-images");
            CriuRun.MustDump(target.Pid, images, extra);
            CriuRun.WaitFree([.. tids]);
            CriuRun.MustRestore(images, extra);
            Assert.Equal(tids, CriuRun.Tids(target.Pid));
            var report = target.Check();
            string text = string.Join(' ', report.Select(kv => $"{kv.Key}={kv.Value}"));
            if (exact)
                Assert.True(report["ok"] == "1", text);
            Assert.True(report["bad"] == "none", text);
            Assert.True(report["worker_errors"] == "0", text);
            Directory.Delete(images, recursive: true);
        }
    }

    [Fact]
    public void Check_SaysWhatTheKernelOffers()
    {
        var (code, output) = MemcrProcess.Run("check");
        Assert.True(code == 0, output);
        Assert.Contains("ok      clone3 with set_tid", output);
        Assert.Contains("ok      pidfd_getfd", output);
        Assert.EndsWith("Looks good.", output.TrimEnd());
    }

    [Fact]
    public void OurDumps_ReadWithCrit()
    {
        using var tree = TreeProgram.Start("criu-crit");
        CriuRun.MustDump(tree.Pid, tree.Images, "--leave-running");
        var ps = MemcrProcess.Run("crit", "x", tree.Images, "ps");
        Assert.True(ps.ExitCode == 0, ps.Output);
        Assert.Matches($@"\s+{tree.Pid}\s+{tree.Pid}\s+{tree.Pid}\s+tree\n\s+{tree.Child}\s+{tree.Pid}\s+{tree.Pid}\s+tree", ps.Output);
        var fds = MemcrProcess.Run("crit", "x", tree.Images, "fds");
        Assert.Contains($"      6: {tree.Dir}/tree.data", fds.Output);
        Assert.Contains("pipe[", fds.Output);
        var mems = MemcrProcess.Run("crit", "x", tree.Images, "mems");
        Assert.Contains("[vdso]", mems.Output);
        Assert.Contains($"{tree.Dir}/tree", mems.Output);
        var verify = MemcrProcess.Run("crit", "verify", tree.Images);
        Assert.True(verify.ExitCode == 0, verify.Output);
    }

    private static int Alarms(string line) => int.Parse(AlarmsField().Match(line).Groups[1].Value, CultureInfo.InvariantCulture);

    private static List<int> Numbers(string screen, string after) =>
        screen[screen.LastIndexOf(after, StringComparison.Ordinal)..].Split('\n').Skip(1)
            .Where(l => l.Length > 0 && l.All(char.IsAsciiDigit)).Select(l => int.Parse(l, CultureInfo.InvariantCulture)).ToList();

    private static List<int> Counts(string log) =>
        File.ReadAllLines(log).Select(l => int.Parse(l["Count: ".Length..], CultureInfo.InvariantCulture)).ToList();

    private static List<int> Children(int pid) =>
        File.Exists($"/proc/{pid}/task/{pid}/children")
            ? File.ReadAllText($"/proc/{pid}/task/{pid}/children").Split(' ', StringSplitOptions.RemoveEmptyEntries).Select(x => int.Parse(x, CultureInfo.InvariantCulture)).ToList()
            : [];

    /// <summary>The Cpus_allowed_list line of every thread of <paramref name="pids"/>.</summary>
    private static List<string> CpuLists(int[] pids) =>
        pids.SelectMany(pid => CriuRun.Tids(pid).Select(tid => File.ReadAllLines($"/proc/{pid}/task/{tid}/status")
            .Single(l => l.StartsWith("Cpus_allowed_list:", StringComparison.Ordinal)))).ToList();

    private static long Pss(int pid) => SmapsRollup(pid, "Pss:");

    private static long Rss(int pid) => SmapsRollup(pid, "Rss:");

    private static long SmapsRollup(int pid, string key) =>
        long.Parse(File.ReadAllLines($"/proc/{pid}/smaps_rollup").First(l => l.StartsWith(key, StringComparison.Ordinal))[key.Length..].Trim().Split(' ')[0], CultureInfo.InvariantCulture);

    [GeneratedRegex(@"My PID is (\d+)")]
    private static partial Regex MyPid();

    [GeneratedRegex(@"alarms=(\d+)")]
    private static partial Regex AlarmsField();

    [GeneratedRegex(@"(\d+) shared with a parent")]
    private static partial Regex SharedPages();
}

/// <summary>
/// tests/fixtures/criu-images/programs/tree.c run as the fixture ran it: detached (setsid), stdio
/// on /dev/null and tree.stdout, in a scratch directory that also holds its images.
/// </summary>
public sealed class TreeProgram : IDisposable
{
    private TreeProgram(string dir, int pid, int child)
    {
        Dir = dir;
        Pid = pid;
        Child = child;
    }

    public string Dir { get; }

    public int Pid { get; }

    public int Child { get; }

    public string Log => Path.Combine(Dir, "tree.log");

    public string Images => Path.Combine(Dir, "images");

    public static TreeProgram Start(string name)
    {
        string dir = Repo.NewScratchDir(name);
        Directory.CreateDirectory(Path.Combine(dir, "images"));
        string exe = CriuRun.BuildProgram("tree", dir);
        Repo.MustRun("setsid", "-f", "sh", "-c", $"cd {dir} && exec {exe} {dir} < /dev/null > {dir}/tree.stdout 2>&1");
        var ready = CriuRun.WaitForLine(Path.Combine(dir, "tree.stdout"), l => l.StartsWith("READY", StringComparison.Ordinal))[0].Split(' ');
        var tree = new TreeProgram(dir, int.Parse(ready[1], CultureInfo.InvariantCulture), int.Parse(ready[3], CultureInfo.InvariantCulture));
        CriuRun.WaitForLine(tree.Log, l => l.StartsWith($"parent {tree.Pid} tick 1 ", StringComparison.Ordinal));
        return tree;
    }

    public List<int> ParentTicks() =>
        File.ReadAllLines(Log).Where(l => l.StartsWith($"parent {Pid} tick ", StringComparison.Ordinal))
            .Select(l => int.Parse(l.Split(' ')[3], CultureInfo.InvariantCulture)).ToList();

    public void Kill()
    {
        Syscalls.Kill(Child, Signals.SIGKILL);
        Syscalls.Kill(Pid, Signals.SIGKILL);
        CriuRun.WaitFree(Pid, Child);
    }

    public void Dispose()
    {
        Syscalls.Kill(Child, Signals.SIGKILL);
        Syscalls.Kill(Pid, Signals.SIGKILL);
        try
        {
            Directory.Delete(Dir, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
