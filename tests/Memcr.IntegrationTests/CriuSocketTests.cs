using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text.RegularExpressions;
using Memcr.IntegrationTests.Harness;

namespace Memcr.IntegrationTests;

/// <summary>
/// CRIU mode and TCP over loopback: a Python web server dumped with a request in flight — while
/// it sleeps, while it reads the request, while it writes a response larger than the socket
/// buffers — and restored, its client (curl, or a socket of the test) never noticing; a client
/// whose server is outside the tree; a listener alone; and --tcp-close.
/// </summary>
public sealed class CriuSocketTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);

    private static string P(int n) => n.ToString(CultureInfo.InvariantCulture);

    [Fact]
    public void WebServer_DumpedWithARequestInFlight_AnswersCurlAfterTheRestore()
    {
        using var server = PythonProgram.Start("criu-web", Path.Combine(Repo.Root, "tests", "fixtures", "criu-images", "programs", "webserver.py"));
        PythonProgram.WaitListening(18080);
        using var curl = Curl.Start("http://127.0.0.1:18080/");
        WaitConnected(18080);
        Thread.Sleep(1000); // the handler sleeps its 10 s
        string images = Images(server);

        CriuRun.MustDump(server.Pid, images, "--tcp-established");
        Assert.Single(Directory.GetFiles(images, "tcp-stream-*.img"));
        string table = LockTables.Of(images);
        Assert.Contains(table, LockTables.All());
        CriuRun.WaitFree(server.Pid);
        Thread.Sleep(2000);
        CriuRun.MustRestore(images, "--tcp-established");

        Assert.DoesNotContain(table, LockTables.All());
        AssertAnswer(curl, "Done after checkpoint!");
        Assert.Equal("0", CriuRun.Status(server.Pid, "TracerPid"));
    }

    [Fact]
    public void Server_DumpedWhileReadingARequest_ReadsTheRestOfItAfterTheRestore()
    {
        const int Port = 18081;
        using var server = PythonProgram.Server("criu-web-read", Port);
        var body = RandomNumberGenerator.GetBytes(4 << 20);
        string bodyFile = Path.Combine(server.Dir, "body");
        File.WriteAllBytes(bodyFile, body);
        using var curl = Curl.Start("--data-binary", "@" + bodyFile, $"http://127.0.0.1:{Port}/");
        WaitConnected(Port);
        Thread.Sleep(1000); // it reads 64 KiB each 50 ms: most of the body is still queued
        string images = Images(server);

        CriuRun.MustDump(server.Pid, images, "--tcp-established");
        Assert.True(Stream(images).InLength > 0, "the server's receive queue was empty at the dump");
        CriuRun.WaitFree(server.Pid);
        CriuRun.MustRestore(images, "--tcp-established");

        AssertAnswer(curl, Convert.ToHexStringLower(SHA256.HashData(body)));
    }

    [Fact]
    public void Server_DumpedWhileWritingALargeResponse_DeliversItWhole()
    {
        const int Port = 18082;
        using var server = PythonProgram.Server("criu-web-write", Port);
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        client.Connect(IPAddress.Loopback, Port);
        client.Send("GET /big HTTP/1.0\r\n\r\n"u8);
        // The client reads nothing: the server's send queue fills, with bytes it could not send yet.
        WaitForStalledSend(Port);
        string images = Images(server);

        CriuRun.MustDump(server.Pid, images, "--tcp-established");
        var stream = Stream(images);
        // Over loopback the peer acknowledges at once what fits its window: the rest was never sent.
        Assert.True(stream.Unsent > 0 && stream.OutLength >= stream.Unsent, $"send queue {stream.OutLength} bytes, {stream.Unsent} unsent");
        CriuRun.WaitFree(server.Pid);
        CriuRun.MustRestore(images, "--tcp-established");

        var received = new MemoryStream();
        var buffer = new byte[1 << 16];
        client.ReceiveTimeout = 30000;
        int n;
        while ((n = client.Receive(buffer)) > 0)
            received.Write(buffer, 0, n);
        var all = received.ToArray();
        int start = all.AsSpan().IndexOf("\r\n\r\n"u8) + 4;
        Assert.StartsWith("HTTP/1.0 200", System.Text.Encoding.ASCII.GetString(all, 0, 12));
        var expected = Enumerable.Range(0, 32 << 20).Select(i => (byte)i).ToArray();
        Assert.Equal(expected.Length, all.Length - start);
        Assert.True(all.AsSpan(start).SequenceEqual(expected), "the response differs from what the server wrote");
    }

    [Fact]
    public void ListeningServer_WithoutConnections_TakesNewClientsAfterTheRestore()
    {
        const int Port = 18083;
        using var server = PythonProgram.Server("criu-listen", Port);
        string images = Images(server);
        CriuRun.MustDump(server.Pid, images);
        Assert.Empty(Directory.GetFiles(images, "tcp-stream-*.img"));
        CriuRun.WaitFree(server.Pid);
        CriuRun.MustRestore(images);
        AssertQuick(Port);
    }

    [Fact]
    public void Client_ConnectedToAServerOutsideTheTree_ResumesItsConversation()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        using var client = PythonProgram.Start("criu-client", PythonProgram.Target("tcpclient.py"), P(port));
        using var conn = listener.AcceptSocket();
        int pings = 0;
        var pong = Task.Run(() =>
        {
            // The server's side: answers every ping in order, on this one connection, until it closes.
            using var reader = new StreamReader(new NetworkStream(conn));
            while (reader.ReadLine() is { } line)
            {
                int n = int.Parse(line["ping ".Length..], CultureInfo.InvariantCulture);
                Assert.Equal(pings + 1, n);
                pings = n;
                conn.Send(System.Text.Encoding.ASCII.GetBytes($"pong {n}\n"));
            }
        });
        SpinWait.SpinUntil(() => Volatile.Read(ref pings) >= 5, Patience);
        string images = Images(client);

        CriuRun.MustDump(client.Pid, images, "--tcp-established");
        int before = Volatile.Read(ref pings);
        CriuRun.WaitFree(client.Pid);
        Thread.Sleep(1000);
        Assert.Equal(before, Volatile.Read(ref pings));
        Assert.False(pong.IsCompleted, "the server's side of the connection ended while the client was dumped");
        CriuRun.MustRestore(images, "--tcp-established");

        Assert.True(SpinWait.SpinUntil(() => Volatile.Read(ref pings) >= before + 10, Patience), $"the conversation stopped at ping {pings}");
        Assert.Contains($"pong {before + 5}", File.ReadAllLines(client.Output));
    }

    [Fact]
    public void EstablishedConnection_WithoutTcpEstablished_IsRefused_AndGoesOn()
    {
        const int Port = 18084;
        using var server = PythonProgram.Server("criu-tcp-refused", Port);
        using var curl = Curl.Start($"http://127.0.0.1:{Port}/slow");
        var conn = WaitConnected(Port);
        string images = Images(server);

        var (code, output) = CriuRun.Dump(server.Pid, images);
        Assert.True(code != 0, output);
        int fd = SocketFd(server.Pid, conn.Inode);
        Assert.Contains($"fd {fd} of pid {server.Pid}", output);
        Assert.Contains($"is an established TCP connection 127.0.0.1:{Port} -> 127.0.0.1:{conn.DestinationPort}: dump it with --tcp-established", output);
        Assert.Contains($"pid {server.Pid} was left running untouched", output);
        Assert.Empty(Directory.GetFileSystemEntries(images));
        Assert.Equal("0", CriuRun.Status(server.Pid, "TracerPid"));

        AssertAnswer(curl, "Done after checkpoint!");
    }

    [Fact]
    public void TcpClose_RestoresTheConnectionClosed_AndTheServerGoesOn()
    {
        const int Port = 18085;
        using var server = PythonProgram.Server("criu-tcp-close", Port);
        using var curl = SlowRequest(Port);
        string images = Images(server);

        CriuRun.MustDump(server.Pid, images, "--tcp-close");
        Assert.Empty(Directory.GetFiles(images, "tcp-stream-*.img"));
        Assert.DoesNotContain(LockTables.Of(images), LockTables.All());
        CriuRun.WaitFree(server.Pid);
        // Without --tcp-close (or --tcp-established) the restore is refused, as CRIU's.
        var (code, output) = CriuRun.Restore(images);
        Assert.True(code != 0, output);
        Assert.Contains("restore it with --tcp-established (or closed, with --tcp-close)", output);
        CriuRun.WaitFree(server.Pid);

        CriuRun.MustRestore(images, "--tcp-close");
        // The connection is gone for curl (the dumped tree was killed), the server serves on.
        Assert.NotEqual(0, curl.Result(Patience).Code);
        Thread.Sleep(10500); // its handler finds its connection closed and goes back to accepting
        AssertQuick(Port);
    }

    [Fact]
    public void FailedDump_LeavesTheConnectionWorking_AndNoLockBehind()
    {
        const int Port = 18086;
        using var server = PythonProgram.Server("criu-tcp-full", Port);
        using var curl = SlowRequest(Port);
        Thread.Sleep(500);
        var tablesBefore = LockTables.All();
        using var full = TmpfsMount.Create("size=1m");

        // The connection is locked and in repair mode before the pages fill the disk.
        var (code, output) = CriuRun.Dump(server.Pid, full.Path, "--tcp-established", "-v4");
        Assert.True(code != 0, output);
        Assert.Contains("locked 1 TCP connection(s)", output);
        Assert.Contains("No space left on device", output, StringComparison.OrdinalIgnoreCase);
        Assert.Contains("the tree was left running untouched", output);
        Assert.Equal(tablesBefore, LockTables.All());
        Assert.Equal("0", CriuRun.Status(server.Pid, "TracerPid"));

        AssertAnswer(curl, "Done after checkpoint!");
        AssertQuick(Port);
    }

    [Fact]
    public void LeaveRunning_TakesTheConnectionsOutOfRepair_AndRemovesTheLock()
    {
        const int Port = 18092;
        using var server = PythonProgram.Server("criu-tcp-leave", Port);
        using var curl = SlowRequest(Port);
        var tablesBefore = LockTables.All();
        string images = Images(server);

        CriuRun.MustDump(server.Pid, images, "--tcp-established", "-R");
        Assert.Single(Directory.GetFiles(images, "tcp-stream-*.img"));
        Assert.Equal(tablesBefore, LockTables.All());
        AssertAnswer(curl, "Done after checkpoint!");
        AssertQuick(Port);
    }

    [Fact]
    public void Restore_WhenThePortIsTaken_FailsCleanly_AndCanBeRetried()
    {
        const int Port = 18087;
        using var server = PythonProgram.Server("criu-port-taken", Port);
        string images = Images(server);
        CriuRun.MustDump(server.Pid, images);
        CriuRun.WaitFree(server.Pid);
        string before = CriuRun.Fingerprint(images);

        using (var blocker = new TcpListener(IPAddress.Loopback, Port))
        {
            blocker.Start();
            var (code, output) = CriuRun.Restore(images);
            Assert.True(code != 0, output);
            Assert.Contains($"cannot make TCP socket", output);
            Assert.Contains($"127.0.0.1:{Port} is in use by another socket", output);
            Assert.Contains("nothing was restored", output);
            Assert.False(Directory.Exists($"/proc/{server.Pid}"), "a half-made process was left running");
            Assert.Equal(before, CriuRun.Fingerprint(images));
        }
        CriuRun.MustRestore(images);
        AssertQuick(Port);
    }

    [Fact]
    public void Restore_WithARepairOptionTheKernelRefuses_FailsCleanly_AndTheLockStaysForTheRetry()
    {
        const int Port = 18088;
        using var server = PythonProgram.Server("criu-tcp-badopt", Port);
        using var curl = SlowRequest(Port);
        Thread.Sleep(500);
        string images = Images(server);
        CriuRun.MustDump(server.Pid, images, "--tcp-established");
        CriuRun.WaitFree(server.Pid);
        string stream = Directory.GetFiles(images, "tcp-stream-*.img").Single();
        var good = File.ReadAllBytes(stream);
        // A window scale of 15 is beyond what TCP allows (14): the kernel refuses the options.
        string json = Path.Combine(server.Dir, "stream.json");
        var (code, output) = MemcrProcess.Run("crit", "decode", "-i", stream, "-o", json);
        Assert.True(code == 0, output);
        File.WriteAllText(json, Regex.Replace(File.ReadAllText(json), "\"snd_wscale\": \\d+", "\"snd_wscale\": 15"));
        (code, output) = MemcrProcess.Run("crit", "encode", "-i", json, "-o", stream);
        Assert.True(code == 0, output);

        (code, output) = CriuRun.Restore(images, "--tcp-established");
        Assert.True(code != 0, output);
        Assert.Contains("TCP_REPAIR_OPTIONS", output);
        Assert.Contains("nothing was restored", output);
        Assert.False(Directory.Exists($"/proc/{server.Pid}"), "a half-made process was left running");
        Assert.Contains(LockTables.Of(images), LockTables.All());

        File.WriteAllBytes(stream, good);
        CriuRun.MustRestore(images, "--tcp-established");
        AssertAnswer(curl, "Done after checkpoint!");
    }

    [Fact]
    public void Dump_WithoutCapNetAdmin_FailsCleanly_AndTheConnectionGoesOn()
    {
        const int Port = 18089;
        using var server = PythonProgram.Server("criu-tcp-nocap", Port);
        using var curl = SlowRequest(Port);
        string images = Images(server);

        var (code, output) = Repo.Run("setpriv", "--inh-caps=-net_admin", "--bounding-set=-net_admin", "--", Repo.Memcr,
            "dump", "-t", P(server.Pid), "-D", images, "--tcp-established");
        Assert.True(code != 0, output);
        Assert.Contains("CAP_NET_ADMIN", output);
        Assert.Contains($"pid {server.Pid} was left running untouched", output);
        Assert.Empty(Directory.GetFileSystemEntries(images));
        Assert.Equal("0", CriuRun.Status(server.Pid, "TracerPid"));

        AssertAnswer(curl, "Done after checkpoint!");
    }

    [Fact]
    public void UdpSockets_BoundAndConnected_CarryDatagramsAfterTheRestore()
    {
        using var peer = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        peer.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        peer.ReceiveTimeout = 30000;
        int peerPort = ((IPEndPoint)peer.LocalEndPoint!).Port;
        const int Port = 18090;
        // Datagrams to its bound socket come back, prefixed, through its socket connected to the test's.
        using var echo = PythonProgram.Start("criu-udp", "-c", $"'import socket; a=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); a.bind((\"127.0.0.1\", {Port})); " +
            $"b=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); b.connect((\"127.0.0.1\", {peerPort})); print(\"ready\", flush=True)\nwhile True: b.send(b\"echo \" + a.recv(100))'");
        CriuRun.WaitForLine(echo.Output, l => l == "ready");
        string Ask(string what)
        {
            peer.SendTo(System.Text.Encoding.ASCII.GetBytes(what), new IPEndPoint(IPAddress.Loopback, Port));
            var buf = new byte[100];
            return System.Text.Encoding.ASCII.GetString(buf, 0, peer.Receive(buf));
        }
        Assert.Equal("echo one", Ask("one"));
        string images = Images(echo);

        CriuRun.MustDump(echo.Pid, images);
        CriuRun.WaitFree(echo.Pid);
        CriuRun.MustRestore(images);
        Assert.Equal("echo two", Ask("two"));
    }

    [Fact]
    public void LockOfAKilledDump_IsRemovedByTheNextRun()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        // Enough memory that the dump is still writing pages when it is killed.
        using var client = PythonProgram.Start("criu-killed", "-c", $"'import socket, time; s=socket.create_connection((\"127.0.0.1\", {port})); " +
            "b=b\"\\x01\" * (768 << 20); print(\"ready\", flush=True); time.sleep(1000)'");
        using var conn = listener.AcceptSocket();
        CriuRun.WaitForLine(client.Output, l => l == "ready");
        var before = LockTables.All();

        using (var dump = MemcrProcess.Start("dump", "-t", P(client.Pid), "-D", Images(client), "--tcp-established"))
        {
            Assert.True(SpinWait.SpinUntil(() => LockTables.All().Except(before).Any(), Patience), "the dump never locked the connection");
            Syscalls.Kill(dump.Pid, Linux.Ptrace.Signals.SIGKILL);
            dump.WaitForExit();
        }
        string stale = LockTables.All().Except(before).Single();
        Assert.True(Directory.Exists($"/proc/{client.Pid}"), "the tree died with its dump");

        // The next dump that locks connections finds the table of a memcr that is gone and a tree that runs: it is removed.
        const int Port = 18091;
        using var server = PythonProgram.Server("criu-after-killed", Port);
        var (code, output) = CriuRun.Dump(server.Pid, Images(server), "--tcp-established");
        Assert.True(code == 0, output);
        Assert.Contains($"removed the network lock {stale} left by a memcr dump of pid {client.Pid} that did not finish", output);
        Assert.DoesNotContain(stale, LockTables.All());
    }

    [Fact]
    public void Restore_OfAConnectionWhosePeerIsGone_SaysSo_AndTheServerCarriesOn()
    {
        const int Port = 18093;
        using var server = PythonProgram.Server("criu-peer-gone", Port);
        using (var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
        {
            client.Connect(IPAddress.Loopback, Port);
            client.Send("GET /slow HTTP/1.0\r\n\r\n"u8);
            WaitConnected(Port);
            string dumped = Images(server);
            CriuRun.MustDump(server.Pid, dumped, "--tcp-established");
            // The client gives up with a reset, which the lock drops: its socket is gone.
            client.LingerState = new LingerOption(true, 0);
        }
        string images = Images(server);
        CriuRun.WaitFree(server.Pid);

        var (code, output) = CriuRun.Restore(images, "--tcp-established");

        Assert.True(code == 0, output);
        Assert.Matches($@"TCP socket \d+ \(127\.0\.0\.1:{Port} -> 127\.0\.0\.1:\d+\): its peer 127\.0\.0\.1:\d+ is on this machine and no socket of it has the connection any more", output);
        AssertQuick(Port);
    }

    private static string Images(PythonProgram p) => Directory.CreateDirectory(Path.Combine(p.Dir, "images")).FullName;

    /// <summary>Waits for the one established connection of the port's side and returns it.</summary>
    private static Linux.Kernel.InetSocketInfo WaitConnected(int port)
    {
        Linux.Kernel.InetSocketInfo? conn = null;
        Assert.True(SpinWait.SpinUntil(() => (conn = PythonProgram.Connections(port).FirstOrDefault()) is not null, Patience), $"no connection to port {port}");
        return conn!;
    }

    /// <summary>Waits until the server's side of the port's connection has a send queue that stopped moving.</summary>
    private static void WaitForStalledSend(int port)
    {
        uint last = 0;
        int still = 0;
        Assert.True(SpinWait.SpinUntil(() =>
        {
            Thread.Sleep(100);
            uint q = PythonProgram.Connections(port).FirstOrDefault()?.SendQueue ?? 0;
            still = q > 0 && q == last ? still + 1 : 0;
            last = q;
            return still >= 5;
        }, Patience), "the server's send queue never filled");
    }

    private static int SocketFd(int pid, uint inode) =>
        Directory.GetFiles($"/proc/{pid}/fd").Select(f => (Fd: int.Parse(Path.GetFileName(f), CultureInfo.InvariantCulture), Link: new FileInfo(f).LinkTarget))
            .First(x => x.Link == $"socket:[{inode}]").Fd;

    /// <summary>The queue lengths of the one tcp-stream image of a dump, as crit decodes it.</summary>
    private static (int InLength, int OutLength, int Unsent) Stream(string images)
    {
        var (code, json) = MemcrProcess.Run("crit", "decode", "-i", Directory.GetFiles(images, "tcp-stream-*.img").Single());
        Assert.True(code == 0, json);
        int Field(string name) => int.Parse(Regex.Match(json, $"\"{name}\": (\\d+)").Groups[1].Value, CultureInfo.InvariantCulture);
        return (Field("inq_len"), Field("outq_len"), Field("unsq_len"));
    }

    private static void AssertQuick(int port)
    {
        using var curl = Curl.Start($"http://127.0.0.1:{port}/quick");
        AssertAnswer(curl, "quick");
    }

    /// <summary>curl ends well, having printed <paramref name="expected"/>.</summary>
    private static void AssertAnswer(Curl curl, string expected)
    {
        var (code, output, errors) = curl.Result(Patience);
        Assert.True(code == 0, errors);
        Assert.Equal(expected, output);
    }

    /// <summary>A request to /slow, connected: the server's handler sleeps its 10 s.</summary>
    private static Curl SlowRequest(int port)
    {
        var curl = Curl.Start($"http://127.0.0.1:{port}/slow");
        WaitConnected(port);
        return curl;
    }
}
