using System.Globalization;
using System.Net.Sockets;
using Memcr.IntegrationTests.Harness;

namespace Memcr.IntegrationTests;

/// <summary>
/// CRIU mode and UNIX sockets (tests/targets/unixsockets.py): a two-process tree holding sockets
/// of every kind CRIU's images hold — pairs, names on paths and abstract, listeners, queued
/// messages, descriptors in flight, half-closed and shut-down pairs — dumped, restored and still
/// holding everything; a datagram socket connected outside the tree (refused unless
/// --ext-unix-sk); a stream connection outside it (refused); a name another process holds at restore.
/// </summary>
public sealed class CriuUnixSocketTests
{
    private sealed class Target : IDisposable
    {
        private readonly PythonProgram _program;

        public Target(string name, params string[] args)
        {
            _program = PythonProgram.Start(name, PythonProgram.Target("unixsockets.py"), args);
            string ready = CriuRun.WaitForLine(_program.Output, l => l.StartsWith("ready ", StringComparison.Ordinal)).First(l => l.StartsWith("ready ", StringComparison.Ordinal));
            Child = int.Parse(ready[6..], CultureInfo.InvariantCulture);
            Images = Directory.CreateDirectory(Path.Combine(_program.Dir, "images")).FullName;
        }

        public int Pid => _program.Pid;

        public int Child { get; }

        public string Dir => _program.Dir;

        public string Images { get; }

        public int[] Pids => Child == 0 ? [Pid] : [Pid, Child];

        /// <summary>Lets the program check its sockets; its verdict lines.</summary>
        public string Check()
        {
            File.WriteAllText(Path.Combine(Dir, "go"), "");
            var lines = CriuRun.WaitForLine(_program.Output, l => l == "all-ok" || l.StartsWith("failed:", StringComparison.Ordinal));
            string all = string.Join('\n', lines);
            Assert.True(lines.Contains("all-ok"), all);
            return all;
        }

        public void Dispose()
        {
            if (Child != 0)
                Syscalls.Kill(Child, Linux.Ptrace.Signals.SIGKILL);
            _program.Dispose();
        }
    }

    [Fact]
    public void Tree_WithSocketsOfEveryKind_HoldsThemAllAfterTheRestore()
    {
        using var t = new Target("criu-unix", "tree");
        CriuRun.MustDump(t.Pid, t.Images);
        Assert.True(File.Exists(Path.Combine(t.Images, "sk-queues.img")), "no sk-queues.img");
        CriuRun.WaitFree(t.Pids);
        CriuRun.MustRestore(t.Images);

        string verdict = t.Check();
        Assert.Contains("ok passed-file", verdict);
        using var client = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        client.Connect(new UnixDomainSocketEndPoint(Path.Combine(t.Dir, "l.sock")));
        client.Send("hi"u8);
        var answer = new byte[100];
        client.ReceiveTimeout = 30000;
        Assert.Equal("echo:hi", System.Text.Encoding.ASCII.GetString(answer, 0, client.Receive(answer)));
    }

    [Fact]
    public void Restore_WhileAnotherProcessHoldsAName_IsRefused_AndSucceedsOnceItIsFree()
    {
        using var t = new Target("criu-unix-inuse", "tree");
        CriuRun.MustDump(t.Pid, t.Images);
        CriuRun.WaitFree(t.Pids);
        string path = Path.Combine(t.Dir, "l.sock");
        File.Delete(path);
        string before = CriuRun.Fingerprint(t.Images);
        var (code, output) = (0, "");
        using (var squatter = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
        {
            squatter.Bind(new UnixDomainSocketEndPoint(path));
            (code, output) = CriuRun.Restore(t.Images);
        }

        Assert.NotEqual(0, code);
        Assert.Matches($@"cannot be bound to {path} again: the address is in use by socket \d+ of a running process; nothing was restored", output);
        Assert.Equal(before, CriuRun.Fingerprint(t.Images));
        Assert.False(Directory.Exists($"/proc/{t.Pid}"), "a refused restore left the process");
        // The squatter is gone (its file stays, stale): the same images restore.
        CriuRun.MustRestore(t.Images);
        t.Check();
    }

    [Fact]
    public void DatagramSocket_ConnectedOutsideTheTree_NeedsExtUnixSk_AndSendsThereAfterTheRestore()
    {
        string dir = Repo.NewScratchDir("criu-unix-ext");
        string path = Path.Combine(dir, "log.sock");
        var log = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
        log.Bind(new UnixDomainSocketEndPoint(path));
        log.ReceiveTimeout = 30000;
        using var t = new Target("criu-unix-extd", "ext-dgram", path);
        Assert.Equal("before", Receive(log));

        var (code, output) = CriuRun.Dump(t.Pid, t.Images);
        Assert.NotEqual(0, code);
        Assert.Matches($@"fd \d+ of pid {t.Pid} \(socket:\[\d+\]\) is connected to a UNIX datagram socket on {path} \(socket \d+\), which is outside the dumped tree: dump it with --ext-unix-sk \(-x\), as with CRIU; pid {t.Pid} was left running untouched", output);
        Assert.Empty(Directory.GetFiles(t.Images));

        CriuRun.MustDump(t.Pid, t.Images, "--ext-unix-sk");
        CriuRun.WaitFree(t.Pid);
        (code, output) = CriuRun.Restore(t.Images);
        Assert.NotEqual(0, code);
        Assert.Contains($"is connected to {path}, outside the dumped tree: restore it with --ext-unix-sk (-x), as with CRIU; nothing was restored", output);
        Assert.False(Directory.Exists($"/proc/{t.Pid}"), "a refused restore left the process");

        // The socket outside is gone: the restore says so and leaves nothing; once it is back, the restore succeeds.
        log.Dispose();
        File.Delete(path);
        (code, output) = CriuRun.Restore(t.Images, "-x");
        Assert.NotEqual(0, code);
        Assert.Matches($@"cannot connect to {path}, a socket outside the restored tree, again: connect on UNIX datagram socket \d+: no such file or directory", output);
        Assert.False(Directory.Exists($"/proc/{t.Pid}"), "a failed restore left the process");

        using var back = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
        back.Bind(new UnixDomainSocketEndPoint(path));
        back.ReceiveTimeout = 30000;
        CriuRun.MustRestore(t.Images, "-x");
        t.Check();
        Assert.Equal("after", Receive(back));
    }

    [Fact]
    public void StreamConnection_ToAServerOutsideTheTree_IsRefused_EvenWithExtUnixSk()
    {
        string dir = Repo.NewScratchDir("criu-unix-exts");
        string path = Path.Combine(dir, "server.sock");
        using var server = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        server.Bind(new UnixDomainSocketEndPoint(path));
        server.Listen(4);
        using var t = new Target("criu-unix-exts", "ext-stream", path);
        using var conn = server.Accept();

        var (code, output) = CriuRun.Dump(t.Pid, t.Images, "--ext-unix-sk");

        Assert.NotEqual(0, code);
        Assert.Matches($@"fd \d+ of pid {t.Pid} \(socket:\[\d+\]\) is connected to a UNIX stream socket connected on {path} \(socket \d+\), which is outside the dumped tree: only a datagram socket connected to a named socket outside can be dumped \(with --ext-unix-sk\), as with CRIU; pid {t.Pid} was left running untouched", output);
        Assert.Empty(Directory.GetFiles(t.Images));
        t.Check();
        conn.ReceiveTimeout = 30000;
        Assert.Equal("beforeafter", Receive(conn, 11));
    }

    [Theory]
    [InlineData("pending", @"is a UNIX stream socket listening on @memcr-test-\d+-pending with 1 connection\(s\) not accepted yet, which memcr cannot dump")]
    [InlineData("passcred", @"has a queued message carrying control data of type 2 \(credentials or a security label, as SO_PASSCRED asks\), which CRIU's images cannot hold")]
    public void Dump_OfASocketCriuCannotHold_IsRefused_AndTheProgramCarriesOn(string mode, string why)
    {
        using var t = new Target("criu-unix-" + mode, mode);

        var (code, output) = CriuRun.Dump(t.Pid, t.Images);

        Assert.NotEqual(0, code);
        Assert.Matches($@"fd \d+ of pid {t.Pid} \(socket:\[\d+\]\) {why}", output);
        Assert.Contains("left running untouched", output);
        Assert.Empty(Directory.GetFiles(t.Images));
        t.Check();
    }

    private static string Receive(Socket s, int want = 0)
    {
        var buffer = new byte[100];
        int got = 0;
        do
            got += s.Receive(buffer, got, buffer.Length - got, SocketFlags.None);
        while (got < want);
        return System.Text.Encoding.ASCII.GetString(buffer, 0, got);
    }
}
