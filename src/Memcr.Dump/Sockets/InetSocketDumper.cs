using Memcr.CriuImages;
using Memcr.Linux;
using Memcr.Linux.Kernel;
using Microsoft.Win32.SafeHandles;

namespace Memcr.Dump.Sockets;

/// <summary>
/// TCP and UDP sockets of a dump, as CRIU writes them: an inet_sk_entry in files.img each, and
/// for an established TCP connection (with --tcp-established) a tcp-stream-INO.img with its
/// sequence numbers, options, window and queued bytes, read in repair mode. The connections are
/// locked (nftables) before repair mode goes on. Until the tree is killed, every repaired socket is
/// kept here: a dump that fails, or goes on with --leave-running, turns repair mode off again and
/// removes the lock, and the connections carry on as if nothing happened.
/// </summary>
internal sealed class InetSocketDumper(DumpOptions options, CriuLog log) : IDisposable
{
    private const int SockStream = 1, SockDgram = 2, NetNsId = 2;

    private Dictionary<uint, InetSocketInfo>? _diag;
    private readonly List<Connection> _connections = [];
    private NetworkLock? _lock;

    private sealed record Connection(InetSocketInfo Info, SafeFileHandle Socket, bool ReuseAddr, string What)
    {
        public bool Repairing { get; set; }
    }

    /// <summary>The TCP or UDP socket with this inode, or null when it is neither.</summary>
    public InetSocketInfo? Find(uint inode)
    {
        _diag ??= InetDiag.All();
        return _diag.TryGetValue(inode, out var s) ? s : null;
    }

    /// <summary>Refuses, before anything is changed, a socket this dump cannot take as it is asked to.</summary>
    public void Check(InetSocketInfo s, string where, int pid)
    {
        string untouched = $"pid {pid} was left running untouched";
        if (s.Protocol == InetDiag.Udp)
            return;
        switch (s.State)
        {
            case InetSocketInfo.Listen when s.ReceiveQueue > 0:
                throw new CriuModeException($"{where} is a TCP socket listening on {s.Describe()} with {s.ReceiveQueue} connection(s) not accepted yet, which CRIU cannot dump either; {untouched}");
            case InetSocketInfo.Listen or InetSocketInfo.Close:
                return;
            case InetSocketInfo.Established when options.TcpClose:
                return;
            case InetSocketInfo.Established when options.TcpEstablished:
                if (!KernelFeatures.Has(KernelFeatures.NetAdmin))
                    throw new CriuModeException($"{where} is the TCP connection {s.Describe()}: dumping it needs CAP_NET_ADMIN (TCP repair mode and the nftables lock), which memcr lacks; {untouched}");
                return;
            case InetSocketInfo.Established:
                throw new CriuModeException($"{where} is an established TCP connection {s.Describe()}: dump it with --tcp-established (or --tcp-close to restore it closed), as with CRIU; {untouched}");
            default:
                throw new CriuModeException($"{where} is a TCP connection {s.Describe()} in state {InetSocketInfo.StateName(s.State)}: memcr dumps established, listening and closed TCP sockets only; {untouched}");
        }
    }

    /// <summary>The socket's entry; an established connection is remembered for <see cref="LockAndSave"/>.</summary>
    public inet_sk_entry Describe(uint id, uint flags, fown_entry fown, InetSocketInfo s, SafeFileHandle sock, string where)
    {
        try
        {
            var e = new inet_sk_entry
            {
                Id = id,
                Ino = s.Inode,
                Family = (uint)s.Family,
                Type = (uint)(s.Protocol == InetDiag.Tcp ? SockStream : SockDgram),
                Proto = (uint)s.Protocol,
                State = (uint)s.State,
                SrcPort = (uint)s.SourcePort,
                DstPort = (uint)s.DestinationPort,
                Flags = flags,
                Backlog = s.State == InetSocketInfo.Listen ? s.SendQueue : 0,
                Fown = fown,
                Opts = SocketOptions.Dump(sock, s.Family, where),
                IpOpts = SocketOptions.DumpIp(sock, s.Family, where),
                NsId = NetNsId,
            };
            e.SrcAddr.AddRange(Words(s.Source));
            e.DstAddr.AddRange(Words(s.Destination));
            if (s.Family == InetDiag.AfInet6)
                e.V6Only = SocketCalls.GetInt(sock, SocketCalls.SolIpv6, SocketCalls.Ipv6V6only, where) != 0;
            if (s.Shutdown != 0)
                e.Shutdown = (sk_shutdown)s.Shutdown;
            if (s.Protocol == InetDiag.Tcp)
                e.TcpOpts = SocketOptions.DumpTcp(sock, where);
            if (s.Protocol == InetDiag.Udp && s.ReceiveQueue > 0)
                log.Warn($"{where}: {s.ReceiveQueue} bytes of datagrams not read yet are not dumped (CRIU drops them too)");
            if (s.Protocol == InetDiag.Tcp && s.State == InetSocketInfo.Established && options.TcpEstablished && !options.TcpClose)
                _connections.Add(new Connection(s, FileCalls.Dup((int)sock.DangerousGetHandle(), where), e.Opts.Reuseaddr, where));
            return e;
        }
        catch (SyscallException ex)
        {
            throw new CriuModeException($"cannot read the state of {where}: {ex.Message}", ex);
        }
    }

    /// <summary>
    /// Locks every remembered connection (one nftables transaction), puts each in repair mode and
    /// reads its state: the tcp-stream entries to write, by socket inode, with their queued bytes.
    /// </summary>
    public List<(uint Inode, tcp_stream_entry Entry, byte[] Queues)> LockAndSave(string runId, int root)
    {
        var saved = new List<(uint, tcp_stream_entry, byte[])>();
        if (_connections.Count == 0)
            return saved;
        if (options.NetworkLock == NetworkLockMethod.Nftables)
        {
            _lock = NetworkLock.Create(runId, root, Path.GetFullPath(options.Dir));
            _lock.Add(_connections.Select(c => c.Info));
            log.Info($"locked {_connections.Count} TCP connection(s) with nftables table {_lock.Table}");
        }
        foreach (var c in _connections)
        {
            try
            {
                TcpRepair.On(c.Socket, c.What);
                c.Repairing = true;
                var s = TcpRepair.Save(c.Socket, c.What);
                if (s.State != InetSocketInfo.Established)
                    throw new CriuModeException($"{c.What}: the connection {c.Info.Describe()} changed to {InetSocketInfo.StateName(s.State)} during the dump");
                var entry = new tcp_stream_entry
                {
                    InqLen = (uint)s.InQueue.Length,
                    InqSeq = s.InSeq,
                    OutqLen = (uint)s.OutQueue.Length,
                    OutqSeq = s.OutSeq,
                    OptMask = s.Options,
                    SndWscale = s.SendWscale,
                    MssClamp = s.MssClamp,
                    RcvWscale = s.ReceiveWscale,
                    Timestamp = s.Timestamp,
                    UnsqLen = (uint)s.Unsent,
                };
                if (s.Window is { } w)
                {
                    entry.SndWl1 = w.SndWl1;
                    entry.SndWnd = w.SndWnd;
                    entry.MaxWindow = w.MaxWindow;
                    entry.RcvWnd = w.RcvWnd;
                    entry.RcvWup = w.RcvWup;
                }
                saved.Add((c.Info.Inode, entry, [.. s.InQueue, .. s.OutQueue]));
                log.Debug($"{c.What}: {c.Info.Describe()} saved: {s.InQueue.Length} bytes received, {s.OutQueue.Length} to send ({s.Unsent} never sent)");
            }
            catch (SyscallException e) when (e.Errno == Errno.EPERM)
            {
                throw new CriuModeException($"{c.What}: TCP repair mode needs CAP_NET_ADMIN: {e.Message}", e);
            }
            catch (SyscallException e)
            {
                throw new CriuModeException($"cannot save the TCP connection {c.Info.Describe()} ({c.What}): {e.Message}", e);
            }
        }
        return saved;
    }

    /// <summary>The dump failed, or the tree runs on: every connection leaves repair mode and the lock goes.</summary>
    public void Resume()
    {
        foreach (var c in _connections.Where(c => c.Repairing))
        {
            try
            {
                TcpRepair.Off(c.Socket, c.What);
                // Repair mode off clears SO_REUSEADDR.
                SocketCalls.SetInt(c.Socket, SocketCalls.SolSocket, SocketCalls.SoReuseaddr, c.ReuseAddr ? 1 : 0, c.What);
                c.Repairing = false;
            }
            catch (SyscallException e)
            {
                log.Error($"{c.What}: cannot take {c.Info.Describe()} out of repair mode: {e.Message}");
            }
        }
        Unlock();
    }

    public void Unlock()
    {
        if (_lock is null)
            return;
        try
        {
            _lock.Remove();
        }
        catch (CriuModeException e)
        {
            log.Error(e.Message);
        }
        _lock = null;
    }

    /// <summary>Closes memcr's copies: after the kill, the connections in repair mode end without a FIN or a reset.</summary>
    public void Dispose()
    {
        foreach (var c in _connections)
            c.Socket.Dispose();
        _connections.Clear();
    }

    /// <summary>An address as CRIU keeps it: 32-bit words of the network-order bytes.</summary>
    public static IEnumerable<uint> Words(byte[] address)
    {
        for (int i = 0; i + 4 <= address.Length; i += 4)
            yield return BitConverter.ToUInt32(address, i);
    }

    public static byte[] Bytes(IEnumerable<uint> words) => [.. words.SelectMany(BitConverter.GetBytes)];

    /// <summary>"127.0.0.1:18080" and "127.0.0.1:45776": the two ends of a socket entry.</summary>
    public static (string Source, string Destination) Endpoints(inet_sk_entry e) =>
        (InetSocketInfo.Endpoint(Bytes(e.SrcAddr), (int)e.SrcPort), InetSocketInfo.Endpoint(Bytes(e.DstAddr), (int)e.DstPort));
}
