using System.Buffers.Binary;
using System.Runtime.InteropServices;

namespace Memcr.Linux.Kernel;

/// <summary>
/// NETLINK_SOCK_DIAG dumps: one request, every answer message's payload (after its netlink
/// header). unix_diag and inet_diag are both asked this way.
/// </summary>
internal static partial class SockDiag
{
    private const int AfNetlink = 16, SockRaw = 3, SockCloexec = 0x80000, NetlinkSockDiag = 4;
    private const ushort SockDiagByFamily = 20, NlmsgDone = 3, NlmsgError = 2;
    private const ushort NlmFRequest = 1, NlmFDump = 0x300;

    /// <summary>Sends a SOCK_DIAG_BY_FAMILY dump request with <paramref name="body"/> and hands each answer to <paramref name="each"/>.</summary>
    public static unsafe void Dump(ReadOnlySpan<byte> body, string what, SpanAction each)
    {
        int fd = socket(AfNetlink, SockRaw | SockCloexec, NetlinkSockDiag);
        if (fd < 0)
            throw Errno.Error("socket(NETLINK_SOCK_DIAG)", what);
        try
        {
            var req = new byte[16 + body.Length];
            BinaryPrimitives.WriteUInt32LittleEndian(req, (uint)req.Length);
            BinaryPrimitives.WriteUInt16LittleEndian(req.AsSpan(4), SockDiagByFamily);
            BinaryPrimitives.WriteUInt16LittleEndian(req.AsSpan(6), NlmFRequest | NlmFDump);
            body.CopyTo(req.AsSpan(16));
            fixed (byte* p = req)
            {
                if (send(fd, p, (nuint)req.Length, 0) < 0)
                    throw Errno.Error("send", $"{what} request");
            }
            var buf = new byte[1 << 16];
            while (true)
            {
                nint n;
                fixed (byte* p = buf)
                    n = recv(fd, p, (nuint)buf.Length, 0);
                if (n < 0)
                    throw Errno.Error("recv", $"{what} answer");
                for (int at = 0; at + 16 <= n;)
                {
                    int len = (int)BinaryPrimitives.ReadUInt32LittleEndian(buf.AsSpan(at));
                    ushort type = BinaryPrimitives.ReadUInt16LittleEndian(buf.AsSpan(at + 4));
                    if (type == NlmsgDone)
                        return;
                    if (type == NlmsgError)
                        throw new SyscallException(what, "sock_diag", -BinaryPrimitives.ReadInt32LittleEndian(buf.AsSpan(at + 16)));
                    if (len < 16 || at + len > n)
                        break;
                    each(buf.AsSpan(at + 16, len - 16));
                    at += (len + 3) & ~3;
                }
            }
        }
        finally
        {
            Interop.Libc.close(fd);
        }
    }

    /// <summary>The netlink attributes from <paramref name="at"/> on: (type, value) each.</summary>
    public static IEnumerable<(int Type, byte[] Value)> Attributes(byte[] m, int at)
    {
        while (at + 4 <= m.Length)
        {
            int len = BinaryPrimitives.ReadUInt16LittleEndian(m.AsSpan(at));
            int kind = BinaryPrimitives.ReadUInt16LittleEndian(m.AsSpan(at + 2));
            if (len < 4 || at + len > m.Length)
                yield break;
            yield return (kind, m[(at + 4)..(at + len)]);
            at += (len + 3) & ~3;
        }
    }

    public delegate void SpanAction(ReadOnlySpan<byte> message);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int socket(int domain, int type, int protocol);

    [LibraryImport("libc", SetLastError = true)]
    private static unsafe partial nint send(int fd, byte* buf, nuint len, int flags);

    [LibraryImport("libc", SetLastError = true)]
    private static unsafe partial nint recv(int fd, byte* buf, nuint len, int flags);
}
