using System.Buffers.Binary;
using System.Runtime.InteropServices;

namespace Memcr.Linux.Kernel;

/// <summary>A UNIX socket as sock_diag describes it.</summary>
public sealed record UnixSocketInfo(uint Inode, int Type, int State, byte[] Name, uint VfsInode, uint VfsDev, uint Peer, uint[] PendingConnections,
    uint ReceiveQueue, uint SendQueue, int Shutdown);

/// <summary>UNIX sockets of this network namespace through NETLINK_SOCK_DIAG (unix_diag): name, peer, queues, pending connections.</summary>
public static partial class UnixDiag
{
    private const int AfNetlink = 16, AfUnix = 1, SockRaw = 3, SockCloexec = 0x80000, NetlinkSockDiag = 4;
    private const ushort SockDiagByFamily = 20, NlmsgDone = 3, NlmsgError = 2;
    private const ushort NlmFRequest = 1, NlmFDump = 0x300;
    private const uint ShowName = 1, ShowVfs = 2, ShowPeer = 4, ShowIcons = 8, ShowRqlen = 0x10;

    /// <summary>Every UNIX socket of the namespace, by inode.</summary>
    public static unsafe Dictionary<uint, UnixSocketInfo> All()
    {
        int fd = socket(AfNetlink, SockRaw | SockCloexec, NetlinkSockDiag);
        if (fd < 0)
            throw Errno.Error("socket(NETLINK_SOCK_DIAG)", "unix_diag");
        try
        {
            var req = new byte[16 + 24];
            BinaryPrimitives.WriteUInt32LittleEndian(req, (uint)req.Length);
            BinaryPrimitives.WriteUInt16LittleEndian(req.AsSpan(4), SockDiagByFamily);
            BinaryPrimitives.WriteUInt16LittleEndian(req.AsSpan(6), NlmFRequest | NlmFDump);
            req[16] = AfUnix;
            BinaryPrimitives.WriteUInt32LittleEndian(req.AsSpan(20), uint.MaxValue); // every state
            BinaryPrimitives.WriteUInt32LittleEndian(req.AsSpan(28), ShowName | ShowVfs | ShowPeer | ShowIcons | ShowRqlen);
            fixed (byte* p = req)
            {
                if (send(fd, p, (nuint)req.Length, 0) < 0)
                    throw Errno.Error("send", "unix_diag request");
            }
            var result = new Dictionary<uint, UnixSocketInfo>();
            var buf = new byte[1 << 16];
            while (true)
            {
                nint n;
                fixed (byte* p = buf)
                    n = recv(fd, p, (nuint)buf.Length, 0);
                if (n < 0)
                    throw Errno.Error("recv", "unix_diag answer");
                for (int at = 0; at + 16 <= n;)
                {
                    int len = (int)BinaryPrimitives.ReadUInt32LittleEndian(buf.AsSpan(at));
                    ushort type = BinaryPrimitives.ReadUInt16LittleEndian(buf.AsSpan(at + 4));
                    if (type == NlmsgDone)
                        return result;
                    if (type == NlmsgError)
                        throw new SyscallException("unix_diag", "sock_diag", -BinaryPrimitives.ReadInt32LittleEndian(buf.AsSpan(at + 16)));
                    if (len < 32)
                        break;
                    var info = Parse(buf.AsSpan(at + 16, len - 16));
                    result[info.Inode] = info;
                    at += (len + 3) & ~3;
                }
            }
        }
        finally
        {
            Interop.Libc.close(fd);
        }
    }

    private static UnixSocketInfo Parse(ReadOnlySpan<byte> m)
    {
        int type = m[1], state = m[2];
        uint ino = BinaryPrimitives.ReadUInt32LittleEndian(m[4..]);
        byte[] name = [];
        uint vfsIno = 0, vfsDev = 0, peer = 0, rq = 0, wq = 0;
        uint[] icons = [];
        int shutdown = 0;
        for (int at = 16; at + 4 <= m.Length;)
        {
            int len = BinaryPrimitives.ReadUInt16LittleEndian(m[at..]);
            int kind = BinaryPrimitives.ReadUInt16LittleEndian(m[(at + 2)..]);
            if (len < 4 || at + len > m.Length)
                break;
            var v = m.Slice(at + 4, len - 4);
            switch (kind)
            {
                case 0: name = v.ToArray(); break;
                case 1: vfsIno = BinaryPrimitives.ReadUInt32LittleEndian(v); vfsDev = BinaryPrimitives.ReadUInt32LittleEndian(v[4..]); break;
                case 2: peer = BinaryPrimitives.ReadUInt32LittleEndian(v); break;
                case 3: icons = MemoryMarshal.Cast<byte, uint>(v).ToArray(); break;
                case 4: rq = BinaryPrimitives.ReadUInt32LittleEndian(v); wq = BinaryPrimitives.ReadUInt32LittleEndian(v[4..]); break;
                case 6: shutdown = v[0]; break;
            }
            at += (len + 3) & ~3;
        }
        return new UnixSocketInfo(ino, type, state, name, vfsIno, vfsDev, peer, icons, rq, wq, shutdown);
    }

    [LibraryImport("libc", SetLastError = true)]
    private static partial int socket(int domain, int type, int protocol);

    [LibraryImport("libc", SetLastError = true)]
    private static unsafe partial nint send(int fd, byte* buf, nuint len, int flags);

    [LibraryImport("libc", SetLastError = true)]
    private static unsafe partial nint recv(int fd, byte* buf, nuint len, int flags);
}
