using System.Buffers.Binary;
using System.Runtime.InteropServices;

namespace Memcr.Linux.Kernel;

/// <summary>A UNIX socket as sock_diag describes it.</summary>
public sealed record UnixSocketInfo(uint Inode, int Type, int State, byte[] Name, uint VfsInode, uint VfsDev, uint Peer, uint[] PendingConnections,
    uint ReceiveQueue, uint SendQueue, int Shutdown);

/// <summary>UNIX sockets of this network namespace through NETLINK_SOCK_DIAG (unix_diag): name, peer, queues, pending connections.</summary>
public static class UnixDiag
{
    private const int AfUnix = 1;
    private const uint ShowName = 1, ShowVfs = 2, ShowPeer = 4, ShowIcons = 8, ShowRqlen = 0x10;

    /// <summary>Every UNIX socket of the namespace, by inode.</summary>
    public static Dictionary<uint, UnixSocketInfo> All()
    {
        var req = new byte[24];
        req[0] = AfUnix;
        BinaryPrimitives.WriteUInt32LittleEndian(req.AsSpan(4), uint.MaxValue); // every state
        BinaryPrimitives.WriteUInt32LittleEndian(req.AsSpan(12), ShowName | ShowVfs | ShowPeer | ShowIcons | ShowRqlen);
        var result = new Dictionary<uint, UnixSocketInfo>();
        SockDiag.Dump(req, "unix_diag", m =>
        {
            if (m.Length >= 16)
            {
                var info = Parse(m.ToArray());
                result[info.Inode] = info;
            }
        });
        return result;
    }

    private static UnixSocketInfo Parse(byte[] m)
    {
        int type = m[1], state = m[2];
        uint ino = BinaryPrimitives.ReadUInt32LittleEndian(m.AsSpan(4));
        byte[] name = [];
        uint vfsIno = 0, vfsDev = 0, peer = 0, rq = 0, wq = 0;
        uint[] icons = [];
        int shutdown = 0;
        foreach (var (kind, v) in SockDiag.Attributes(m, 16))
        {
            switch (kind)
            {
                case 0: name = v; break;
                case 1: vfsIno = BinaryPrimitives.ReadUInt32LittleEndian(v); vfsDev = BinaryPrimitives.ReadUInt32LittleEndian(v.AsSpan(4)); break;
                case 2: peer = BinaryPrimitives.ReadUInt32LittleEndian(v); break;
                case 3: icons = MemoryMarshal.Cast<byte, uint>(v).ToArray(); break;
                case 4: rq = BinaryPrimitives.ReadUInt32LittleEndian(v); wq = BinaryPrimitives.ReadUInt32LittleEndian(v.AsSpan(4)); break;
                case 6: shutdown = v[0]; break;
            }
        }
        return new UnixSocketInfo(ino, type, state, name, vfsIno, vfsDev, peer, icons, rq, wq, shutdown);
    }
}
