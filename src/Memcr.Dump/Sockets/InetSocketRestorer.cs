using Memcr.CriuImages;
using Memcr.Dump.Restoring;
using Memcr.Linux;
using Memcr.Linux.Kernel;
using Microsoft.Win32.SafeHandles;

namespace Memcr.Dump.Sockets;

/// <summary>
/// TCP and UDP sockets made again by memcr for the restored processes to take: listening sockets
/// bound and listening, UDP sockets bound and connected, and established TCP connections rebuilt
/// in repair mode from their tcp-stream image (or, with --tcp-close, left as closed sockets). The
/// rebuilt connections stay in repair mode — silent — until <see cref="Resume"/>, just before the
/// processes run.
/// </summary>
internal sealed class InetSocketRestorer(RestoreOptions options, CriuLog log)
{
    private const int ONonblock = 0x800, ORdwr = 2, ENotconn = 107, EAddrinuse = 98;

    private readonly List<(SafeFileHandle Socket, TcpConnectionState State, bool ReuseAddr, string What)> _repaired = [];
    private HashSet<string>? _liveConnections;
    private HashSet<string>? _dumpedConnections;

    public int Connections => _repaired.Count;

    public SafeFileHandle Open(DumpImages images, inet_sk_entry e)
    {
        string what = Describe(e);
        var sock = SocketCalls.Create((int)e.Family, (int)e.Type, (int)e.Proto, what);
        try
        {
            SocketOptions.Restore(sock, e.Opts, what);
            if (e.HasV6Only && e.V6Only)
                SocketCalls.SetInt(sock, SocketCalls.SolIpv6, SocketCalls.Ipv6V6only, 1, what);
            // Several sockets may share an address (a listener and its connections): bound with
            // SO_REUSEADDR, which goes back to the dumped value once all is in place.
            SocketCalls.SetInt(sock, SocketCalls.SolSocket, SocketCalls.SoReuseaddr, 1, what);
            var local = SocketCalls.Address((int)e.Family, InetSocketDumper.Bytes(e.SrcAddr), (int)e.SrcPort);
            var peer = SocketCalls.Address((int)e.Family, InetSocketDumper.Bytes(e.DstAddr), (int)e.DstPort);
            bool connection = e.Proto == InetDiag.Tcp && e.State == InetSocketInfo.Established;
            if (connection && options.TcpClose)
            {
                // As CRIU: a new socket, neither bound nor connected, shut down.
                Shutdown(sock, SocketCalls.ShutBoth, e, what);
            }
            else if (connection)
            {
                var state = images.TcpStream(e.Ino);
                if (PeerGone(images, e))
                {
                    log.Warn($"{what}: its peer {InetSocketDumper.Endpoints(e).Destination} is on this machine and no socket of it has the connection any more: " +
                        "it is made again, and the process will see it reset, as a peer lost on the network");
                }
                TcpRepair.On(sock, what);
                Bind(() => TcpRepair.Restore(sock, state, local, peer, what), e, what);
                _repaired.Add((sock, state, e.Opts.Reuseaddr, what));
            }
            else
            {
                if (e.SrcPort != 0)
                    Bind(() => SocketCalls.Bind(sock, local, what), e, what);
                if (e.State == InetSocketInfo.Listen)
                    SocketCalls.Listen(sock, (int)e.Backlog, what);
                if (e.DstPort != 0)
                    SocketCalls.Connect(sock, peer, what);
            }
            if (e.IpOpts is { } ip)
                SocketOptions.RestoreIp(sock, (int)e.Family, ip, what);
            if (e.TcpOpts is { } tcp)
                SocketOptions.RestoreTcp(sock, tcp, what);
            if (!connection && e.HasShutdown && e.Shutdown != sk_shutdown.None)
                Shutdown(sock, (int)e.Shutdown - 1, e, what);
            if (!e.Opts.Reuseaddr && !connection)
                SocketCalls.SetInt(sock, SocketCalls.SolSocket, SocketCalls.SoReuseaddr, 0, what);
            FileCalls.SetStatusFlags(sock, ((int)e.Flags & ONonblock) | ORdwr, what);
            log.Debug($"{what} ready");
            return sock;
        }
        catch (SyscallException ex)
        {
            sock.Dispose();
            throw new CriuModeException($"cannot make {what} again: {ex.Message}", ex);
        }
        catch
        {
            sock.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Whether the peer of connection <paramref name="e"/> is on this machine (its address can be
    /// bound here) and neither a socket of it nor the dump has the other end any more: the
    /// restored connection would only be reset.
    /// </summary>
    private bool PeerGone(DumpImages images, inet_sk_entry e)
    {
        var (src, dst) = InetSocketDumper.Endpoints(e);
        string reversed = $"{dst} {src}";
        _dumpedConnections ??= [.. images.Files.Values.Where(f => f.Type == fd_types.Inetsk && f.Isk.Proto == InetDiag.Tcp).Select(f => Key(f.Isk))];
        if (_dumpedConnections.Contains(reversed))
            return false;
        try
        {
            using var probe = SocketCalls.Create((int)e.Family, 2, 0, "a probe of the peer's address");
            SocketCalls.Bind(probe, SocketCalls.Address((int)e.Family, InetSocketDumper.Bytes(e.DstAddr), 0), "a probe of the peer's address");
        }
        catch (SyscallException)
        {
            return false; // not an address of this machine: the peer is elsewhere, and cannot be seen from here
        }
        _liveConnections ??= [.. InetDiag.All().Values.Where(c => c.Protocol == InetDiag.Tcp && c.DestinationPort != 0)
            .Select(c => $"{InetSocketInfo.Endpoint(c.Source, c.SourcePort)} {InetSocketInfo.Endpoint(c.Destination, c.DestinationPort)}")];
        return !_liveConnections.Contains(reversed);
    }

    private static string Key(inet_sk_entry e)
    {
        var (src, dst) = InetSocketDumper.Endpoints(e);
        return $"{src} {dst}";
    }

    private static void Bind(Action bind, inet_sk_entry e, string what)
    {
        try
        {
            bind();
        }
        catch (SyscallException ex) when (ex.Errno == EAddrinuse)
        {
            throw new CriuModeException($"cannot make {what} again: {InetSocketDumper.Endpoints(e).Source} is in use by another socket ({ex.Message})", ex);
        }
        catch (SyscallException ex) when (ex.Errno == Errno.EPERM)
        {
            throw new CriuModeException($"cannot make {what} again: TCP repair mode needs CAP_NET_ADMIN ({ex.Message})", ex);
        }
    }

    private static void Shutdown(SafeFileHandle sock, int how, inet_sk_entry e, string what)
    {
        try
        {
            SocketCalls.Shutdown(sock, how, what);
        }
        catch (SyscallException ex) when (ex.Errno == ENotconn || e.State == InetSocketInfo.Close)
        {
            // A socket that is not connected has nothing to shut down.
        }
    }

    /// <summary>
    /// The connections leave repair mode, in order: all of them (they are still behind the lock,
    /// so nothing reaches the peer), then the caller unlocks, then <see cref="SendUnsent"/>.
    /// </summary>
    public void Resume()
    {
        foreach (var (sock, _, reuse, what) in _repaired)
        {
            try
            {
                TcpRepair.Off(sock, what);
                SocketCalls.SetInt(sock, SocketCalls.SolSocket, SocketCalls.SoReuseaddr, reuse ? 1 : 0, what);
            }
            catch (SyscallException ex)
            {
                throw new CriuModeException($"cannot take {what} out of repair mode: {ex.Message}", ex);
            }
        }
    }

    /// <summary>Bytes the process had written that were never sent go out now, as they would have.</summary>
    public void SendUnsent()
    {
        foreach (var (sock, state, _, what) in _repaired.Where(r => r.State.Unsent > 0))
        {
            try
            {
                TcpRepair.SendUnsent(sock, state, what);
            }
            catch (SyscallException ex)
            {
                log.Error($"{what}: {ex.Message}");
            }
        }
    }

    private static string Describe(inet_sk_entry e)
    {
        string proto = e.Proto == InetDiag.Tcp ? "TCP" : "UDP";
        var (src, dst) = InetSocketDumper.Endpoints(e);
        string where = e.State switch
        {
            InetSocketInfo.Listen => $"listening on {src}",
            _ when e.DstPort != 0 => $"{src} -> {dst}",
            _ when e.SrcPort != 0 => $"bound to {src}",
            _ => "unbound",
        };
        return $"{proto} socket {e.Id} ({where})";
    }
}
