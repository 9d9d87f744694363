using Memcr.CriuImages;
using Memcr.Linux;
using Memcr.Linux.Kernel;
using Microsoft.Win32.SafeHandles;

namespace Memcr.Dump.Sockets;

/// <summary>
/// UNIX sockets of a dump, as CRIU writes them: a unix_sk_entry each in files.img (type, state,
/// name, peer, options, shutdown, the permissions of a path's socket file), and in sk-queues.img
/// the messages waiting in each socket's queue, read with MSG_PEEK so that they stay where they
/// are, with the descriptors they pass (those become files of the dump too). Once every process is
/// collected, each socket's peer must be in the dump; a datagram socket connected to a named
/// socket outside it is allowed with --ext-unix-sk, as by CRIU.
/// </summary>
internal sealed class UnixSocketDumper(DumpOptions options) : IDisposable
{
    public const int Established = 1, Listen = 10;
    private const int NetNsId = 2, ShutdownBoth = 3;

    private Dictionary<uint, UnixSocketInfo>? _diag;
    private readonly Dictionary<uint, (unix_sk_entry Entry, string Where, int Pid)> _dumped = [];
    private readonly List<SafeFileHandle> _passed = [];
    private byte[]? _buffer;

    /// <summary>sk-queues.img: each queued message, for the socket (file id) whose queue it is in.</summary>
    public List<(sk_packet_entry Entry, byte[] Data)> Queues { get; } = [];

    /// <summary>The UNIX socket with this inode, or null when it is not one.</summary>
    public UnixSocketInfo? Find(uint inode)
    {
        _diag ??= UnixDiag.All();
        return _diag.TryGetValue(inode, out var u) ? u : null;
    }

    /// <summary>Refuses, before anything is changed, a socket CRIU's images cannot hold.</summary>
    public static void Check(UnixSocketInfo u, string where, int pid)
    {
        string untouched = $"pid {pid} was left running untouched";
        if (u.State == Listen && u.PendingConnections.Length > 0)
            throw new CriuModeException($"{where} is {Describe(u)} with {u.PendingConnections.Length} connection(s) not accepted yet, which memcr cannot dump; {untouched}");
        if (u.State == Established && u.Type != SocketCalls.SockDgram && u.Peer == 0 && u.Shutdown != ShutdownBoth)
            throw new CriuModeException($"{where} is {Describe(u)} whose peer is gone but which is not shut down, which cannot be dumped; {untouched}");
    }

    /// <summary>"a UNIX stream socket listening on /run/x.sock" and the like.</summary>
    public static string Describe(UnixSocketInfo u)
    {
        string state = u.State switch { Listen => " listening", Established when u.Type != SocketCalls.SockDgram => " connected", _ => "" };
        return $"a UNIX {TypeName(u.Type)} socket{state}{(u.Name.Length > 0 ? $" on {SocketCalls.UnixName(u.Name)}" : "")}";
    }

    public static string TypeName(int type) => type switch
    {
        SocketCalls.SockStream => "stream",
        SocketCalls.SockDgram => "datagram",
        SocketCalls.SockSeqpacket => "seqpacket",
        _ => $"type-{type}",
    };

    /// <summary>
    /// The socket's entry, and its queued messages into <see cref="Queues"/>. A descriptor a
    /// message passes is given to <paramref name="passedFile"/>, which makes it a file of the dump
    /// and returns its id.
    /// </summary>
    public unix_sk_entry Describe(uint id, uint flags, fown_entry fown, UnixSocketInfo u, SafeFileHandle sock, string where, int pid, Func<int, string, uint> passedFile)
    {
        try
        {
            var e = new unix_sk_entry
            {
                Id = id, Ino = u.Inode, Type = (uint)u.Type, State = (uint)u.State, Flags = flags, Uflags = 0,
                Backlog = u.SendQueue, Peer = u.Peer, Fown = fown, Opts = SocketOptions.Dump(sock, SocketCalls.AfUnix, where),
                // The name as sock_diag gives it, a path's terminating NUL and all, as CRIU keeps it.
                Name = Google.Protobuf.ByteString.CopyFrom(u.Name),
                NsId = NetNsId,
            };
            if (u.Shutdown != 0)
                e.Shutdown = (sk_shutdown)u.Shutdown;
            if (u.Name.Length > 0 && u.Name[0] != 0)
                PathName(e, u, sock, where);
            if (u.ReceiveQueue != 0 && u.State != Listen)
                PeekQueue(sock, id, where, passedFile);
            _dumped[u.Inode] = (e, where, pid);
            return e;
        }
        catch (SyscallException ex)
        {
            throw new CriuModeException($"cannot read the state of {where}: {ex.Message}", ex);
        }
    }

    /// <summary>
    /// A socket bound to a path: its file's permissions, or deleted when that file was removed; a
    /// relative name gets the directory it was bound in (name_dir). The file is the socket's own
    /// (SIOCUNIXFILE), whatever the process's directory is now.
    /// </summary>
    private static void PathName(unix_sk_entry e, UnixSocketInfo u, SafeFileHandle sock, string where)
    {
        using var file = SocketCalls.UnixFile(sock, where);
        string self = $"/proc/self/fd/{file.DangerousGetHandle()}";
        string link = new FileInfo(self).LinkTarget ?? "";
        const string Deleted = " (deleted)";
        if (link.EndsWith(Deleted, StringComparison.Ordinal))
        {
            e.Deleted = true;
            link = link[..^Deleted.Length];
        }
        string name = SocketCalls.UnixName(u.Name);
        if (!name.StartsWith('/') && link.EndsWith("/" + name, StringComparison.Ordinal))
            e.NameDir = link[..^(name.Length + 1)];
        var st = FileCalls.Stat(self);
        e.FilePerms = new file_perms_entry { Mode = st.Mode, Uid = st.Uid, Gid = st.Gid };
    }

    private void PeekQueue(SafeFileHandle sock, uint id, string where, Func<int, string, uint> passedFile)
    {
        _buffer ??= new byte[4 << 20];
        int original = SocketCalls.GetInt(sock, SocketCalls.SolSocket, SocketCalls.SoPeekOff, where);
        SocketCalls.SetInt(sock, SocketCalls.SolSocket, SocketCalls.SoPeekOff, 0, where);
        try
        {
            while (SocketCalls.PeekMessage(sock, _buffer, where) is { } m)
            {
                var entry = new sk_packet_entry { IdFor = id, Length = (uint)m.Data.Length };
                if (m.Fds.Length > 0)
                {
                    var scm = new scm_entry { Type = 1 };
                    foreach (int fd in m.Fds)
                    {
                        // Kept open until the dump ends: a later descriptor of the same file is recognised by kcmp.
                        _passed.Add(new SafeFileHandle(fd, true));
                        scm.Rights.Add(passedFile(fd, $"a descriptor passed in a message queued on {where}"));
                    }
                    entry.Scm.Add(scm);
                }
                if (m.OtherControl != 0)
                {
                    throw new CriuModeException(
                        $"{where} has a queued message carrying control data of type {m.OtherControl} (credentials or a security label, as SO_PASSCRED asks), which CRIU's images cannot hold");
                }
                Queues.Add((entry, m.Data));
            }
        }
        finally
        {
            SocketCalls.SetInt(sock, SocketCalls.SolSocket, SocketCalls.SoPeekOff, original, where);
        }
    }

    /// <summary>
    /// Once every process is collected: the peer of each socket is in the dump, or it is a named
    /// datagram socket outside (allowed with --ext-unix-sk: an entry for it, USK_EXTERN, as CRIU
    /// writes, with an id from <paramref name="newId"/>). Anything else is refused.
    /// </summary>
    public List<file_entry> CheckPeers(Func<uint> newId)
    {
        var external = new Dictionary<uint, file_entry>();
        foreach (var (e, where, pid) in _dumped.Values)
        {
            if (e.Peer == 0)
                continue;
            var peer = Find(e.Peer);
            string untouched = $"pid {pid} was left running untouched";
            if (_dumped.TryGetValue(e.Peer, out var inTree))
            {
                if (inTree.Entry.Peer != e.Ino && inTree.Entry.Name.Length == 0)
                    throw new CriuModeException($"{where} is connected to an unnamed UNIX socket ({inTree.Where}) that is connected elsewhere: it could not be connected again; {untouched}");
                continue;
            }
            string other = peer is null ? $"socket {e.Peer}" : $"{Describe(peer)} (socket {e.Peer})";
            if (e.Type != SocketCalls.SockDgram || peer is null || peer.Name.Length == 0 || peer.Peer == e.Ino)
            {
                throw new CriuModeException(
                    $"{where} is connected to {other}, which is outside the dumped tree: only a datagram socket connected to a named socket outside can be dumped (with --ext-unix-sk), as with CRIU; {untouched}");
            }
            if (!options.ExtUnixSk)
                throw new CriuModeException($"{where} is connected to {other}, which is outside the dumped tree: dump it with --ext-unix-sk (-x), as with CRIU; {untouched}");
            if (!external.ContainsKey(e.Peer))
            {
                uint id = newId();
                external[e.Peer] = new file_entry
                {
                    Type = fd_types.Unixsk,
                    Id = id,
                    Usk = new unix_sk_entry
                    {
                        Id = id, Ino = e.Peer, Type = SocketCalls.SockDgram, State = Listen, Flags = 0, Uflags = UnixFlags.External, Backlog = 0, Peer = 0,
                        Fown = Files.FileTable.NoOwner(), Opts = new sk_opts_entry { SoSndbuf = 0, SoRcvbuf = 0, SoSndTmoSec = 0, SoSndTmoUsec = 0, SoRcvTmoSec = 0, SoRcvTmoUsec = 0 }, Name = Google.Protobuf.ByteString.CopyFrom(peer.Name),
                    },
                };
            }
        }
        return [.. external.Values];
    }

    public void Dispose()
    {
        foreach (var f in _passed)
            f.Dispose();
    }
}

/// <summary>unix_sk_entry.uflags as CRIU sets them.</summary>
internal static class UnixFlags
{
    /// <summary>The peer of a socket of the dump, outside it: connected to by name again at restore.</summary>
    public const uint External = 1;

    /// <summary>A socket connected to CRIU's own service socket.</summary>
    public const uint Service = 2;

    /// <summary>A socket a CRIU plugin dumped.</summary>
    public const uint Callback = 4;

    /// <summary>A socket given to the restore from outside (--inherit-fd).</summary>
    public const uint Inherit = 8;
}
