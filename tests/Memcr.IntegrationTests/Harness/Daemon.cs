using System.Net;
using System.Net.Sockets;
using Memcr.Client;
using Memcr.Linux.Ptrace;

namespace Memcr.IntegrationTests.Harness;

/// <summary>A memcr service (memcr -l) running for one test, with its dump directory.</summary>
public sealed class Daemon : IDisposable
{
    private Daemon(MemcrProcess process, string location, string dumpDir)
    {
        Process = process;
        Location = location;
        DumpDir = dumpDir;
    }

    public MemcrProcess Process { get; }

    /// <summary>What -l was given: a port or a socket path.</summary>
    public string Location { get; }

    public string DumpDir { get; }

    public int Pid => Process.Pid;

    public MemcrClient Client => MemcrClient.ForLocation(Location);

    /// <summary>Starts memcr -l on a UNIX socket in <paramref name="dumpDir"/> (or a free TCP port) and waits until it listens.</summary>
    public static Daemon Start(string dumpDir, bool tcp = false, params string[] extra)
    {
        string location = tcp ? FreePort().ToString(System.Globalization.CultureInfo.InvariantCulture) : Path.Combine(dumpDir, "memcr.sock");
        return StartAt(location, dumpDir, extra);
    }

    public static Daemon StartAt(string location, string dumpDir, string[] extra, string? file = null, string[]? prefix = null)
    {
        string[] args = [.. prefix ?? [], "-l", location, "-d", dumpDir, .. extra];
        var p = file is null ? MemcrProcess.Start(args) : MemcrProcess.StartFile(file, args);
        p.WaitFor("memcr service listening on");
        return new Daemon(p, location, dumpDir);
    }

    public static int FreePort()
    {
        using var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        s.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)s.LocalEndPoint!).Port;
    }

    public EndPoint EndPoint => MemcrProtocol.ParseLocation(Location);

    /// <summary>Open descriptors of the daemon.</summary>
    public int FdCount => Directory.GetFiles($"/proc/{Pid}/fd").Length;

    /// <summary>A raw connection to the daemon, for tests that speak bytes.</summary>
    public Socket Connect()
    {
        var ep = EndPoint;
        var s = new Socket(ep.AddressFamily, SocketType.Stream, ep is UnixDomainSocketEndPoint ? ProtocolType.Unspecified : ProtocolType.Tcp);
        s.Connect(ep);
        s.ReceiveTimeout = 120_000;
        return s;
    }

    public int Stop()
    {
        Process.Signal(Signals.SIGTERM);
        return Process.WaitForExit();
    }

    public void Dispose() => Process.Dispose();
}
