using System.Buffers.Binary;
using System.Diagnostics;
using System.Globalization;
using System.Net.Sockets;
using System.Text.Json;
using Memcr.Client;
using Memcr.IntegrationTests.Harness;
using Memcr.Linux.Ptrace;

namespace Memcr.IntegrationTests;

/// <summary>The memcr service (memcr -l) with real clients and real targets.</summary>
public sealed class ServiceTests
{
    private static string P(int pid) => pid.ToString(CultureInfo.InvariantCulture);

    private static byte[] Request(int command, int pid)
    {
        var b = new byte[8];
        BinaryPrimitives.WriteInt32LittleEndian(b, command);
        BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(4), pid);
        return b;
    }

    /// <summary>Sends raw request bytes and reads exactly the 4-byte answer.</summary>
    private static int Ask(Socket s, int command, int pid)
    {
        s.Send(Request(command, pid));
        return ReadInt(s);
    }

    private static int ReadInt(Socket s)
    {
        var answer = new byte[4];
        int done = 0;
        while (done < 4)
        {
            int n = s.Receive(answer, done, 4 - done, SocketFlags.None);
            Assert.True(n > 0, "the daemon closed the connection instead of answering");
            done += n;
        }
        return BinaryPrimitives.ReadInt32LittleEndian(answer);
    }

    private static void AssertFrozen(FifoTarget t)
    {
        Assert.All(t.ThreadStates, s => Assert.True(s is 't' or 'T', $"pid {t.Pid} thread state {s}"));
        Assert.True(t.Status.RssAnonKb < 1024, $"pid {t.Pid} RssAnon {t.Status.RssAnonKb} kB while checkpointed");
    }

    private static void AssertRunning(FifoTarget t)
    {
        Assert.Equal(0, t.Status.TracerPid);
        t.AssertIntact();
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void RawProtocol_OverBothTransports_IsExactlyTheContract(bool tcp)
    {
        string dir = Repo.NewScratchDir("raw");
        using var daemon = Daemon.Start(dir, tcp);
        using var target = FifoTarget.StartIdle(8);
        using (var s = daemon.Connect())
        {
            Assert.Equal(0, Ask(s, 100, target.Pid));
            // Nothing but the 4 bytes comes back.
            Assert.False(s.Poll(200_000, SelectMode.SelectRead), "the daemon sent more than the 4-byte answer");
            AssertFrozen(target);
            Assert.True(File.Exists(Path.Combine(dir, $"pages-{target.Pid}.img")));
            Assert.True(File.Exists(Path.Combine(dir, $"memcr-{target.Pid}.journal")));
            // Checkpoint then restore on one connection, as memcr-client -c -r does.
            Assert.Equal(0, Ask(s, 101, target.Pid));
            Assert.False(s.Poll(200_000, SelectMode.SelectRead));
            // And again at once, several times: each answer comes when the pid is free again.
            for (int i = 0; i < 5; i++)
            {
                Assert.Equal(0, Ask(s, 100, target.Pid));
                Assert.Equal(0, Ask(s, 101, target.Pid));
            }
        }
        AssertRunning(target);
        Assert.Empty(Directory.GetFiles(dir, "pages-*"));
        Assert.Empty(Directory.GetFiles(dir, "memcr-*.journal"));
        Assert.Equal(0, daemon.Stop());
        Directory.Delete(dir, recursive: true);
    }

    [Fact]
    public void TcpService_ListensOnLoopbackOnly()
    {
        string dir = Repo.NewScratchDir("loopback");
        using var daemon = Daemon.Start(dir, tcp: true);
        string listening = File.ReadAllText("/proc/net/tcp");
        string port = int.Parse(daemon.Location, CultureInfo.InvariantCulture).ToString("X4", CultureInfo.InvariantCulture);
        Assert.Contains($"0100007F:{port}", listening);
        Assert.DoesNotContain($"00000000:{port}", listening);
        Assert.Equal(0, daemon.Stop());

        // Every interface only when asked for, and a bad address is refused.
        int any = Daemon.FreePort();
        using (var open = Daemon.StartAt(any.ToString(CultureInfo.InvariantCulture), dir, ["--listen-address", "0.0.0.0"]))
        {
            Assert.Contains($"00000000:{any:X4}", File.ReadAllText("/proc/net/tcp"));
            Assert.Equal(0, open.Stop());
        }
        var (code, output) = MemcrProcess.Run("-l", "9", "--listen-address", "localhost.example", "-d", dir);
        Assert.Equal(1, code);
        Assert.Contains("--listen-address localhost.example: not an IP address", output);
        Directory.Delete(dir, recursive: true);
    }

    [Fact]
    public void MemcrClient_PrintsTheOriginalsLines_AndExitsWithTheAnswer()
    {
        string dir = Repo.NewScratchDir("client");
        using var daemon = Daemon.Start(dir);
        using var target = FifoTarget.StartIdle(4);
        string sock = daemon.Location;

        var (code, output) = Repo.Run(Repo.MemcrClient, "-l", sock, "-p", P(target.Pid), "-c");
        Assert.Equal(0, code);
        Assert.Equal($"Will checkpoint {target.Pid}.\nProcedure finished with OK status.\nCommand executed, exiting.\n", output);
        AssertFrozen(target);

        (code, output) = Repo.Run(Repo.MemcrClient, "-l", sock, "-p", P(target.Pid), "-c");
        Assert.Equal(255, code); // -1: already checkpointed
        Assert.Contains("Procedure finished with ERROR status.", output);

        (code, output) = Repo.Run(Repo.MemcrClient, "-l", sock, "--status");
        Assert.Equal(0, code);
        using (var json = JsonDocument.Parse(output))
        {
            var p = Assert.Single(json.RootElement.GetProperty("processes").EnumerateArray());
            Assert.Equal(target.Pid, p.GetProperty("pid").GetInt32());
            Assert.Equal("checkpointed", p.GetProperty("state").GetString());
            Assert.True(p.GetProperty("rss_saved_kb").GetInt64() > 3000);
            Assert.True(p.GetProperty("image_bytes").GetInt64() > 0);
        }

        (code, output) = Repo.Run(Repo.MemcrClient, "-l", sock, "-p", P(target.Pid), "-r");
        Assert.Equal(0, code);
        Assert.Equal($"Will restore {target.Pid}.\nProcedure finished with OK status.\nCommand executed, exiting.\n", output);
        AssertRunning(target);

        (code, _) = Repo.Run(Repo.MemcrClient, "-l", sock, "-p", P(target.Pid), "-r");
        Assert.Equal(255, code); // not checkpointed
        (code, _) = Repo.Run(Repo.MemcrClient, "-l", sock, "-p", "4194304", "-c");
        Assert.Equal(254, code); // -2: no such process
        (code, output) = Repo.Run(Repo.MemcrClient, "-p", "1", "-c");
        Assert.Equal(1, code);
        Assert.Contains("Incorrect arguments provided!", output);
        (code, output) = Repo.Run(Repo.MemcrClient, "-l", sock, "-p", "1");
        Assert.Contains("You have to provide a command", output);
        (code, output) = Repo.Run(Repo.MemcrClient, "-l", Path.Combine(dir, "nothing.sock"), "-p", "1", "-c");
        Assert.Equal(255, code);
        Assert.Contains("Connection creation failed!", output);
        (code, output) = Repo.Run(Repo.MemcrClient, "-V");
        Assert.Equal(0, code);
        Assert.StartsWith("[i] memcr-client version ", output);

        Assert.Equal(0, daemon.Stop());
        Directory.Delete(dir, recursive: true);
    }

    [Fact]
    public async Task MalformedRequests_AreAnsweredOrClosed_AndTheDaemonKeepsServingWithoutLeaking()
    {
        string dir = Repo.NewScratchDir("malformed");
        using var daemon = Daemon.Start(dir);
        using var target = FifoTarget.StartIdle(4);
        int fdsBefore = daemon.FdCount;

        // A client that sends one byte and hangs: nobody else waits for it.
        using var hanging = daemon.Connect();
        hanging.Send(new byte[] { 100 });

        using (var s = daemon.Connect())
        {
            Assert.Equal(-1, Ask(s, 555, target.Pid)); // unknown command
            Assert.Equal(-2, Ask(s, 100, 0));
            Assert.Equal(-2, Ask(s, 100, -5));
            Assert.Equal(-2, Ask(s, 101, -1));
            Assert.Equal(-1, Ask(s, 101, target.Pid)); // not checkpointed
            var garbage = new byte[8];
            new Random(4).NextBytes(garbage);
            s.Send(garbage);
            Assert.True(ReadInt(s) is -1 or -2);
        }
        // A short request then end of file: closed, nothing done.
        using (var s = daemon.Connect())
        {
            s.Send(new byte[] { 100, 0, 0 });
            s.Shutdown(SocketShutdown.Send);
            Assert.Equal(0, s.Receive(new byte[4]));
        }

        // 1000 connections at once, each with a request: every one answered.
        var sockets = new List<Socket>();
        try
        {
            for (int i = 0; i < 1000; i++)
                sockets.Add(daemon.Connect());
            foreach (var s in sockets)
                s.Send(Request(101, target.Pid));
            foreach (var s in sockets)
                Assert.Equal(-1, ReadInt(s));
        }
        finally
        {
            sockets.ForEach(s => s.Dispose());
        }

        // Still serving: a real checkpoint and restore.
        Assert.Equal(MemcrResponse.Ok, await daemon.Client.CheckpointAsync(target.Pid));
        AssertFrozen(target);
        Assert.Equal(MemcrResponse.Ok, await daemon.Client.RestoreAsync(target.Pid));
        AssertRunning(target);

        hanging.Dispose();
        var sw = Stopwatch.StartNew();
        while (daemon.FdCount > fdsBefore + 2 && sw.Elapsed < TimeSpan.FromSeconds(10))
            Thread.Sleep(50);
        Assert.True(daemon.FdCount <= fdsBefore + 2, $"daemon holds {daemon.FdCount} descriptors, {fdsBefore} before");
        Assert.Contains("malformed request", daemon.Process.Output);
        Assert.Equal(0, daemon.Stop());
        Directory.Delete(dir, recursive: true);
    }

    [Fact]
    public async Task SixtyFourTargets_AreCheckpointedConcurrently_ThenRestored_AllIntact()
    {
        string dir = Repo.NewScratchDir("many");
        using var daemon = Daemon.Start(dir, extra: ["-z"]);
        var targets = new List<FifoTarget>();
        try
        {
            for (int i = 0; i < 64; i++)
                targets.Add(FifoTarget.StartIdle(4));
            var client = daemon.Client;
            var results = await Task.WhenAll(targets.Select(t => client.CheckpointAsync(t.Pid)));
            Assert.True(results.All(r => r == MemcrResponse.Ok), string.Join('\n', daemon.Process.Output.Split('\n').Where(l => l.StartsWith("[-]", StringComparison.Ordinal))));
            targets.ForEach(AssertFrozen);
            var status = await client.GetStatusAsync();
            Assert.Equal(64, status.Processes.Count(p => p.State == "checkpointed"));
            Assert.Equal(64, Directory.GetFiles(dir, "memcr-*.journal").Length);

            results = await Task.WhenAll(targets.Select(t => client.RestoreAsync(t.Pid)));
            Assert.All(results, r => Assert.Equal(MemcrResponse.Ok, r));
            targets.ForEach(AssertRunning);
            Assert.Empty((await client.GetStatusAsync()).Processes);
        }
        finally
        {
            targets.ForEach(t => t.Dispose());
        }
        Assert.Equal(0, daemon.Stop());
        Directory.Delete(dir, recursive: true);
    }

    [Fact]
    public async Task RestoreDuringCheckpoint_AbortsIt_AndLeavesTheProcessRunning()
    {
        // The dump directory is a file system the test freezes: the checkpoint, target frozen and
        // pages being read, blocks at its first write to the image until the restore request is in.
        using var fs = LoopMount.Create(megabytes: 256);
        using var daemon = Daemon.Start(fs.Path);
        using var target = FifoTarget.StartMemtest(heapMb: 64);
        string maps = target.Maps;
        Task<MemcrResponse> checkpoint, restore;
        fs.Freeze();
        try
        {
            checkpoint = daemon.Client.CheckpointAsync(target.Pid);
            daemon.Process.WaitFor($"pid {target.Pid}: downloading pages");
            Assert.All(target.ThreadStates, s => Assert.True(s is 't' or 'T', $"pid {target.Pid} thread state {s} during the checkpoint"));
            restore = daemon.Client.RestoreAsync(target.Pid);
            daemon.Process.WaitFor("restore requested while the checkpoint is running: aborting the checkpoint");
        }
        finally
        {
            // Before anything else: a memcr blocked on a frozen file system cannot even be killed.
            fs.Thaw();
        }
        Assert.Equal(MemcrResponse.Ok, await restore);
        Assert.Equal(MemcrResponse.Error, await checkpoint);
        Assert.Contains("checkpoint aborted by a restore request", daemon.Process.Output);
        Assert.Equal(maps, target.Maps);
        AssertRunning(target);
        Assert.Empty((await daemon.Client.GetStatusAsync()).Processes);
        Assert.Empty(Directory.GetFiles(fs.Path, "pages-*"));
        Assert.Empty(Directory.GetFiles(fs.Path, "memcr-*.journal"));
        Assert.Equal(0, daemon.Stop());
    }

    [Fact]
    public async Task Timeout_AbandonsTheCheckpoint_AndLeavesTheTargetRunning()
    {
        string dir = Repo.NewScratchDir("timeout");
        using var daemon = Daemon.Start(dir, extra: ["-t", "0.005"]);
        using var target = FifoTarget.StartMemtest(heapMb: 64);
        Assert.Equal(MemcrResponse.Error, await daemon.Client.CheckpointAsync(target.Pid));
        Assert.Contains("checkpoint timed out after 0.005 s", daemon.Process.Output);
        AssertRunning(target);
        Assert.Empty(Directory.GetFiles(dir, "pages-*"));
        Assert.Equal(0, daemon.Stop());
        Directory.Delete(dir, recursive: true);
    }

    [Fact]
    public async Task TargetDyingWhileCheckpointed_IsCleanedUp()
    {
        string dir = Repo.NewScratchDir("dies");
        using var daemon = Daemon.Start(dir);
        using var target = FifoTarget.StartIdle(4);
        Assert.Equal(MemcrResponse.Ok, await daemon.Client.CheckpointAsync(target.Pid));
        target.Signal(Signals.SIGKILL);
        var sw = Stopwatch.StartNew();
        while ((await daemon.Client.GetStatusAsync()).Processes.Count > 0 && sw.Elapsed < TimeSpan.FromSeconds(10))
            Thread.Sleep(50);
        Assert.Empty((await daemon.Client.GetStatusAsync()).Processes);
        Assert.Empty(Directory.GetFiles(dir, "pages-*"));
        Assert.Empty(Directory.GetFiles(dir, "memcr-*.journal"));
        Assert.Contains($"target pid {target.Pid} terminated by SIGKILL while checkpointed", daemon.Process.Output);
        Assert.Equal(MemcrResponse.Error, await daemon.Client.RestoreAsync(target.Pid));
        Assert.Equal(0, daemon.Stop());
        Directory.Delete(dir, recursive: true);
    }

    [Fact]
    public async Task ClientDisconnectingMidRequest_DoesNotStopTheCheckpoint()
    {
        string dir = Repo.NewScratchDir("disconnect");
        using var daemon = Daemon.Start(dir);
        using var target = FifoTarget.StartMemtest(heapMb: 64);
        using (var s = daemon.Connect())
            s.Send(Request(100, target.Pid));
        var sw = Stopwatch.StartNew();
        while ((await daemon.Client.GetStatusAsync()).Processes.All(p => p.State != "checkpointed") && sw.Elapsed < TimeSpan.FromSeconds(30))
            Thread.Sleep(20);
        AssertFrozen(target);
        Assert.Equal(MemcrResponse.Ok, await daemon.Client.RestoreAsync(target.Pid));
        AssertRunning(target);
        Assert.Equal(0, daemon.Stop());
        Directory.Delete(dir, recursive: true);
    }

    [Fact]
    public async Task DaemonKilled_LeavesThreeTargetsFrozen_AndANewDaemonRestoresThem()
    {
        string dir = Repo.NewScratchDir("crash");
        string key = Path.Combine(dir, "key");
        File.WriteAllText(key, Convert.ToHexString(System.Security.Cryptography.RandomNumberGenerator.GetBytes(32)));
        string[] options = ["-z", "--key-file", key];
        var targets = Enumerable.Range(0, 3).Select(_ => FifoTarget.StartMemtest(heapMb: 16, "program")).ToList();
        try
        {
            using (var first = Daemon.Start(dir, extra: options))
            {
                foreach (var t in targets)
                    Assert.Equal(MemcrResponse.Ok, await first.Client.CheckpointAsync(t.Pid));
                first.Process.Signal(Signals.SIGKILL);
                first.Process.WaitForExit();
            }
            targets.ForEach(t => t.AssertLeftFrozen());
            Assert.True(File.Exists(Path.Combine(dir, "memcr.sock")), "the dead daemon's socket is left behind");

            using var second = Daemon.Start(dir, extra: options);
            var status = await second.Client.GetStatusAsync();
            Assert.Equal(targets.Select(t => t.Pid).Order(), status.Processes.Select(p => p.Pid).Order());
            // Each is taken over on its own thread: "taking over", then "checkpointed".
            var waited = Stopwatch.StartNew();
            while (status.Processes.Any(p => p.State == "taking over") && waited.Elapsed < TimeSpan.FromSeconds(30))
            {
                await Task.Delay(20);
                status = await second.Client.GetStatusAsync();
            }
            Assert.All(status.Processes, p => Assert.True(p.Adopted && p.State == "checkpointed", $"{p.Pid}: {p.State}"));
            foreach (var t in targets)
                Assert.Equal(MemcrResponse.Ok, await second.Client.RestoreAsync(t.Pid));
            targets.ForEach(AssertRunning);
            Assert.Empty(Directory.GetFiles(dir, "memcr-*.journal"));
            Assert.Empty(Directory.GetFiles(dir, "pages-*"));
            Assert.Equal(0, second.Stop());
        }
        finally
        {
            targets.ForEach(t => t.Dispose());
        }
        Directory.Delete(dir, recursive: true);
    }

    [Fact]
    public async Task Journal_EntriesOfGoneOrRunningProcesses_AreForgotten_AndTheProcessesLeftAlone()
    {
        string dir = Repo.NewScratchDir("journal");
        using var running = FifoTarget.StartIdle(4);
        string startTime = File.ReadAllText($"/proc/{running.Pid}/stat").Split(')')[1].Split(' ', StringSplitOptions.RemoveEmptyEntries)[19];
        void Entry(int pid, string start)
        {
            File.WriteAllText(Path.Combine(dir, $"pages-{pid}.img"), "stale");
            File.WriteAllText(Path.Combine(dir, $"memcr-{pid}.journal"), $$"""
                {"pid": {{pid}}, "start_time": {{start}}, "image": "{{dir}}/pages-{{pid}}.img", "image_id": "00000000000000aa",
                 "codec": 0, "encryption": 0, "persistent_key": false, "file_pages": false,
                 "since": "2026-01-01T00:00:00+00:00", "image_bytes": 5, "saved_bytes": 4096, "rss_saved_kb": 4}
                """);
        }
        Entry(4194303, "12345"); // no such process
        Entry(running.Pid, startTime); // running: its memory was never dropped
        File.WriteAllText(Path.Combine(dir, "memcr-77.journal"), "{ not json");
        using var daemon = Daemon.Start(dir);
        Assert.Empty((await daemon.Client.GetStatusAsync()).Processes);
        Assert.Empty(Directory.GetFiles(dir, "pages-*"));
        Assert.Equal([Path.Combine(dir, "memcr-77.journal")], Directory.GetFiles(dir, "memcr-*.journal"));
        Assert.Contains("ignoring unreadable journal", daemon.Process.Output);
        AssertRunning(running);
        Assert.Equal(0, daemon.Stop());
        Directory.Delete(dir, recursive: true);
    }

    [Fact]
    public async Task SigTerm_RestoresEveryHeldProcess_AndRemovesTheSocket()
    {
        string dir = Repo.NewScratchDir("sigterm");
        using var daemon = Daemon.Start(dir, extra: ["-c"]);
        using var a = FifoTarget.StartIdle(4);
        using var b = FifoTarget.StartMemtest(heapMb: 16);
        Assert.Equal(MemcrResponse.Ok, await daemon.Client.CheckpointAsync(a.Pid));
        Assert.Equal(MemcrResponse.Ok, await daemon.Client.CheckpointAsync(b.Pid));
        Assert.Equal(0, daemon.Stop());
        Assert.Contains("restoring 2 held processes", daemon.Process.Output);
        AssertRunning(a);
        AssertRunning(b);
        Assert.False(File.Exists(daemon.Location), "socket removed on exit");
        Assert.Empty(Directory.GetFiles(dir, "memcr-*.journal"));
        Directory.Delete(dir, recursive: true);
    }

    [Fact]
    public void SocketGroup_AndStaleOrForeignSocketFiles()
    {
        string dir = Repo.NewScratchDir("sockets");
        string sock = Path.Combine(dir, "memcr.sock");
        using (var daemon = Daemon.StartAt(sock, dir, ["-g", "65534"]))
        {
            Assert.Equal((UnixFileMode)0x1B0, File.GetUnixFileMode(sock)); // 0660
            var (_, stat) = Repo.Run("stat", "-c", "%g", sock);
            Assert.Equal("65534", stat.Trim());
            // A second service on the same live socket is refused, and the first keeps its socket.
            var (code, output) = MemcrProcess.Run("-l", sock, "-d", dir);
            Assert.Equal(1, code);
            Assert.Contains("another service is listening there", output);
            Assert.Equal(0, daemon.Stop());
        }
        File.WriteAllText(sock, "not a socket");
        var (c, o) = MemcrProcess.Run("-l", sock, "-d", dir);
        Assert.Equal(1, c);
        Assert.Contains("is not a socket (left alone)", o);
        Assert.Equal("not a socket", File.ReadAllText(sock));
        Directory.Delete(dir, recursive: true);
    }

    [Fact]
    public async Task NonRootUser_WithFileCapabilities_ServesCheckpointsAndRestores()
    {
        const string user = "memcr-it-svc";
        if (Repo.Run("id", "-u", user).ExitCode != 0)
            Repo.MustRun("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user);
        string dir = Repo.NewScratchDir("nonroot");
        File.SetUnixFileMode(dir, (UnixFileMode)0x1ED); // 0755
        string bin = Path.Combine(dir, "bin");
        Directory.CreateDirectory(bin);
        File.SetUnixFileMode(bin, (UnixFileMode)0x1ED);
        string memcr = Path.Combine(bin, "memcr");
        File.Copy(Repo.Memcr, memcr);
        Repo.MustRun("setcap", "cap_sys_ptrace,cap_kill,cap_dac_override+ep", memcr);
        string dump = Path.Combine(dir, "dump");
        Directory.CreateDirectory(dump);
        Repo.MustRun("chown", user, dump);
        File.SetUnixFileMode(dump, (UnixFileMode)0x1C0); // 0700

        using var target = FifoTarget.StartMemtest(heapMb: 16);
        using var daemon = Daemon.StartAt(Path.Combine(dump, "memcr.sock"), dump, ["-z"], "setpriv",
            ["--reuid", user, "--regid", user, "--clear-groups", "--inh-caps=-all", memcr]);
        var status = File.ReadAllText($"/proc/{daemon.Pid}/status");
        Assert.Matches(@"Uid:\s+[1-9][0-9]*\s", status);
        // CAP_DAC_OVERRIDE (bit 1), CAP_KILL (5), CAP_SYS_PTRACE (19) and nothing else.
        Assert.Contains("CapEff:\t0000000000080022", status);
        Assert.Equal(MemcrResponse.Ok, await daemon.Client.CheckpointAsync(target.Pid));
        AssertFrozen(target);
        Assert.Equal(MemcrResponse.Ok, await daemon.Client.RestoreAsync(target.Pid));
        AssertRunning(target);
        Assert.Equal(0, daemon.Stop());
        Directory.Delete(dir, recursive: true);
    }
}
