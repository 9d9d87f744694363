using Memcr.CriuImages;
using Memcr.Dump.Restoring;
using Memcr.Linux;
using Memcr.Linux.Kernel;
using Microsoft.Win32.SafeHandles;

namespace Memcr.Dump.Sockets;

/// <summary>
/// UNIX sockets made again by memcr for the restored processes to take, as CRIU makes them. Two
/// sockets that are each other's peer are one socketpair (an established stream pair keeps no
/// name, as with CRIU); any other socket is made and bound to its name (path or abstract),
/// listening if it was. Once every file exists (<see cref="Finish"/>) the queued messages are
/// sent again by the socket's peer — or, when it has none in the dump, by a stand-in peer that
/// then goes — with the descriptors they passed; then datagram sockets connect to their peer's
/// name (inside the dump, or outside with --ext-unix-sk), options are set and shutdowns made.
/// </summary>
internal sealed class UnixSocketRestorer : IDisposable
{
    private const int ONonblock = 0x800, ORdwr = 2;

    private readonly DumpImages _images;
    private readonly CriuLog _log;
    private readonly Dictionary<uint, unix_sk_entry> _byIno = [];
    private readonly Dictionary<uint, SafeFileHandle> _made = [];
    private readonly Dictionary<uint, SafeFileHandle> _unclaimed = [];
    private readonly Dictionary<uint, uint> _mate = [];
    private readonly Dictionary<uint, SafeFileHandle> _standIns = [];
    private readonly HashSet<uint> _queued;

    public UnixSocketRestorer(DumpImages images, CriuLog log)
    {
        _images = images;
        _log = log;
        foreach (var f in images.Files.Values.Where(f => f.Type == fd_types.Unixsk))
            _byIno.TryAdd(f.Usk.Ino, f.Usk);
        _queued = [.. images.SkQueues.Select(q => q.Entry.IdFor)];
    }

    /// <summary>"UNIX stream socket 1234 (/run/x.sock)", for messages.</summary>
    public static string Describe(unix_sk_entry u) =>
        $"UNIX {UnixSocketDumper.TypeName((int)u.Type)} socket {u.Ino}{(u.Name.Length > 0 ? $" ({SocketCalls.UnixName(u.Name.Span)})" : "")}";

    /// <summary>
    /// Refuses, before anything is made, a socket that cannot be made again: CRIU's plugin, service
    /// and inherited sockets, a peer outside the tree without --ext-unix-sk, a name another
    /// running socket holds or a file that is not a socket holds.
    /// </summary>
    public static void Check(DumpImages images, unix_sk_entry u, string where, RestoreOptions options, Lazy<Dictionary<uint, UnixSocketInfo>> live)
    {
        string what = $"{where} ({Describe(u)})";
        const string Nothing = "nothing was restored";
        if (u.Uflags != 0)
            throw new CriuModeException($"{what} was dumped by CRIU with flags 0x{u.Uflags:x} (a plugin's socket, one connected to CRIU's service, or an inherited one), which memcr cannot restore; {Nothing}");
        if (u.Peer != 0)
        {
            var peer = images.Files.Values.FirstOrDefault(f => f.Type == fd_types.Unixsk && f.Usk.Ino == u.Peer)?.Usk
                ?? throw new CriuModeException($"{what} is connected to UNIX socket {u.Peer}, which {Path.Combine(images.Dir, ImageKinds.Files.FileName)} does not have; {Nothing}");
            if ((peer.Uflags & UnixFlags.External) != 0 && !options.ExtUnixSk)
                throw new CriuModeException($"{what} is connected to {SocketCalls.UnixName(peer.Name.Span)}, outside the dumped tree: restore it with --ext-unix-sk (-x), as with CRIU; {Nothing}");
        }
        if (u.Name.Length == 0 || (u.Type != SocketCalls.SockDgram && u.State == UnixSocketDumper.Established))
            return;
        string name = SocketCalls.UnixName(u.Name.Span);
        if (u.Name[0] == 0)
        {
            if (live.Value.Values.FirstOrDefault(s => s.Name.AsSpan().SequenceEqual(u.Name.Span)) is { } holder)
                throw new CriuModeException($"{what} cannot be bound to {name} again: the address is in use by socket {holder.Inode} of a running process; {Nothing}");
            return;
        }
        string path = PathOf(u);
        if (!File.Exists(path))
            return;
        var st = FileCalls.Stat(path, follow: false);
        if (!st.IsSocket)
            throw new CriuModeException($"{what} cannot be bound to {path} again: a file that is not a socket is there now; {Nothing}");
        if (live.Value.Values.FirstOrDefault(s => s.VfsInode == st.Inode && s.Name.Length > 0) is { } owner)
            throw new CriuModeException($"{what} cannot be bound to {path} again: the address is in use by socket {owner.Inode} of a running process; {Nothing}");
    }

    /// <summary>The socket of file entry <paramref name="u"/>, made (with its pair's other end, when it has one) and bound.</summary>
    public SafeFileHandle Open(unix_sk_entry u)
    {
        string what = Describe(u);
        if (_unclaimed.Remove(u.Id, out var mine))
            return mine;
        if (u.Uflags != 0)
            throw new CriuModeException($"{what} was dumped with CRIU's flags 0x{u.Uflags:x} (a plugin's, its service socket's or an inherited one), which memcr cannot restore");
        var peer = Peer(u);
        SafeFileHandle sock;
        if (peer is not null && peer.Peer == u.Ino && peer.Ino != u.Ino && (peer.Uflags & UnixFlags.External) == 0)
        {
            var (a, b) = SocketCalls.Pair((int)u.Type, what);
            _mate[u.Id] = peer.Id;
            _mate[peer.Id] = u.Id;
            _made[peer.Id] = b;
            _unclaimed[peer.Id] = b;
            Prepare(b, peer);
            sock = a;
        }
        else if (_queued.Contains(u.Id) || (u.State == UnixSocketDumper.Established && u.Type != SocketCalls.SockDgram && u.Peer == 0))
        {
            // Someone must send its queue again: a stand-in peer, gone once it has. A datagram
            // socket forgets it (connect(AF_UNSPEC), the queue still empty) so that it may connect elsewhere.
            var (a, standIn) = SocketCalls.Pair((int)u.Type, what);
            if (u.Type == SocketCalls.SockDgram)
                SocketCalls.Disconnect(a, what);
            _standIns[u.Id] = standIn;
            sock = a;
        }
        else
        {
            sock = SocketCalls.Create(SocketCalls.AfUnix, (int)u.Type, 0, what);
        }
        _made[u.Id] = sock;
        Prepare(sock, u);
        return sock;
    }

    private unix_sk_entry? Peer(unix_sk_entry u)
    {
        if (u.Peer == 0)
            return null;
        return _byIno.TryGetValue(u.Peer, out var p) ? p
            : throw new CriuModeException($"{Path.Combine(_images.Dir, ImageKinds.Files.FileName)} has no UNIX socket {u.Peer}, the peer of {Describe(u)}");
    }

    /// <summary>Bound to its name (not an established stream socket, as with CRIU), listening if it was, its file flags set.</summary>
    private static void Prepare(SafeFileHandle sock, unix_sk_entry u)
    {
        string what = Describe(u);
        if (u.Name.Length > 0 && !(u.Type != SocketCalls.SockDgram && u.State == UnixSocketDumper.Established))
            Bind(sock, u, what);
        if (u.State == UnixSocketDumper.Listen)
            SocketCalls.Listen(sock, (int)Math.Max(1, u.Backlog), what);
        FileCalls.SetStatusFlags(sock, ((int)u.Flags & ONonblock) | ORdwr, what);
    }

    private static void Bind(SafeFileHandle sock, unix_sk_entry u, string what)
    {
        var address = SocketCalls.UnixAddress(u.Name.Span);
        if (u.Name[0] == 0)
        {
            SocketCalls.Bind(sock, address, what);
            return;
        }
        string path = PathOf(u);
        // The dumped socket's file is still there (the socket is gone): it makes way, as with CRIU.
        if (File.Exists(path) && FileCalls.Stat(path, follow: false).IsSocket)
            FileCalls.Unlink(path);
        InDirectory(u, () => SocketCalls.Bind(sock, address, what));
        if (u.FilePerms is { } perms)
        {
            File.SetUnixFileMode(path, (UnixFileMode)(perms.Mode & 0xfff));
            FileOps.ChangeOwner(path, (int)perms.Uid, (int)perms.Gid);
        }
        if (u.HasDeleted && u.Deleted)
            FileCalls.Unlink(path);
    }

    /// <summary>The path of a socket bound by path name (a relative one in its name_dir).</summary>
    public static string PathOf(unix_sk_entry u)
    {
        string name = SocketCalls.UnixName(u.Name.Span);
        return name.StartsWith('/') || !u.HasNameDir ? name : Path.Combine(u.NameDir, name);
    }

    /// <summary>A relative name is bound (or connected to) from the directory it was bound in.</summary>
    private static void InDirectory(unix_sk_entry u, Action action)
    {
        if (!u.HasNameDir || u.Name.Span[0] == '/' || u.Name.Span[0] == 0)
        {
            action();
            return;
        }
        string before = Environment.CurrentDirectory;
        Environment.CurrentDirectory = u.NameDir;
        try
        {
            action();
        }
        finally
        {
            Environment.CurrentDirectory = before;
        }
    }

    /// <summary>
    /// Once every file of the restore exists (<paramref name="files"/>, for descriptors a message
    /// passes): queues, connections, options, shutdowns.
    /// </summary>
    public void Finish(Func<uint, SafeFileHandle> files)
    {
        foreach (var group in _images.SkQueues.GroupBy(q => q.Entry.IdFor))
            Requeue(group.Key, [.. group], files);
        foreach (var standIn in _standIns.Values)
            standIn.Dispose();
        _standIns.Clear();
        foreach (var (id, sock) in _made)
        {
            var u = _images.Files[id].Usk;
            string what = Describe(u);
            if (!_mate.ContainsKey(id) && Peer(u) is { } peer)
            {
                if (peer.Name.Length == 0)
                    throw new CriuModeException($"{what} was connected to {Describe(peer)}, which has no name to connect to again");
                string to = SocketCalls.UnixName(peer.Name.Span);
                try
                {
                    InDirectory(peer, () => SocketCalls.Connect(sock, SocketCalls.UnixAddress(peer.Name.Span), what));
                }
                catch (SyscallException e)
                {
                    string outside = (peer.Uflags & UnixFlags.External) != 0 ? ", a socket outside the restored tree," : "";
                    throw new CriuModeException($"{what} cannot connect to {to}{outside} again: {e.Message}", e);
                }
            }
            SocketOptions.Restore(sock, u.Opts, what);
            if (u.HasShutdown && u.Shutdown != sk_shutdown.None)
                SocketCalls.Shutdown(sock, (int)u.Shutdown - 1, what);
        }
    }

    /// <summary>The queued messages of socket <paramref name="id"/>, sent again by its peer or its stand-in.</summary>
    private void Requeue(uint id, List<(sk_packet_entry Entry, byte[] Data)> messages, Func<uint, SafeFileHandle> files)
    {
        if (!_made.ContainsKey(id))
        {
            _log.Warn($"{Path.Combine(_images.Dir, ImageKinds.SkQueues.FileName)}: messages for file {id}, which no process has: left out");
            return;
        }
        string what = $"the queue of {Describe(_images.Files[id].Usk)}";
        var sender = _mate.TryGetValue(id, out uint mate) ? _made[mate]
            : _standIns.TryGetValue(id, out var standIn) ? standIn
            : throw new CriuModeException($"{what}: no socket to send it again");
        // The sender's buffer must hold the whole queue (its own size is set later, from its options).
        long total = messages.Sum(m => (long)m.Data.Length + 1024);
        SocketCalls.SetInt(sender, SocketCalls.SolSocket, SocketCalls.SoSndbufforce, (int)Math.Min(int.MaxValue / 2, total), what);
        foreach (var (entry, data) in messages)
        {
            if (data.Length != entry.Length)
                throw new CriuModeException($"{Path.Combine(_images.Dir, ImageKinds.SkQueues.FileName)}: a message of {what} has {data.Length} bytes where its entry says {entry.Length}");
            var fds = entry.Scm.Where(s => s.Type == 1).SelectMany(s => s.Rights).Select(r => (int)files(r).DangerousGetHandle()).ToArray();
            try
            {
                SocketCalls.SendMessage(sender, data, fds, null, what);
            }
            catch (SyscallException e)
            {
                throw new CriuModeException($"cannot queue a message of {data.Length} bytes on {what} again: {e.Message}", e);
            }
        }
        _log.Debug($"{what}: {messages.Count} message(s) queued again");
    }

    public void Dispose()
    {
        foreach (var h in _unclaimed.Values.Concat(_standIns.Values))
            h.Dispose();
    }
}
