using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Memcr.Linux.Kernel;

/// <summary>IPv4 and IPv6 sockets made, bound and connected by address bytes (network order) and port.</summary>
public static partial class SocketCalls
{
    public const int SolIp = 0, SolTcp = 6, SolIpv6 = 41;
    public const int SoType = 3, SoDontroute = 5, SoBroadcast = 6, SoKeepalive = 9, SoOobinline = 10, SoNoCheck = 11, SoPriority = 12,
        SoLinger = 13, SoRcvlowat = 18, SoSndbufforce = 32, SoRcvbufforce = 33, SoMark = 36, SoBufLock = 72;
    public const int IpTos = 1, IpTtl = 2, IpPktinfo = 8, IpFreebind = 15, Ipv6V6only = 26, Ipv6Recvpktinfo = 49, Ipv6Freebind = 78;
    public const int TcpNodelay = 1, TcpMaxseg = 2, TcpCork = 3, TcpKeepidle = 4, TcpKeepintvl = 5, TcpKeepcnt = 6;
    public const int ShutRead = 0, ShutWrite = 1, ShutBoth = 2;
    private const int SockCloexec = 0x80000, MsgDontwait = 0x40, MsgPeek = 2;

    /// <summary>A new socket, close-on-exec.</summary>
    public static SafeFileHandle Create(int family, int type, int protocol, string what)
    {
        int fd = socket(family, type | SockCloexec, protocol);
        if (fd < 0)
            throw Errno.Error("socket", what);
        return new SafeFileHandle(fd, true);
    }

    /// <summary>sockaddr_in or sockaddr_in6 for an address in network byte order.</summary>
    public static byte[] Address(int family, ReadOnlySpan<byte> address, int port)
    {
        var sa = new byte[family == InetDiag.AfInet ? 16 : 28];
        BinaryPrimitives.WriteUInt16LittleEndian(sa, (ushort)family);
        BinaryPrimitives.WriteUInt16BigEndian(sa.AsSpan(2), (ushort)port);
        address.CopyTo(sa.AsSpan(family == InetDiag.AfInet ? 4 : 8));
        return sa;
    }

    public static unsafe void Bind(SafeHandle fd, byte[] sockaddr, string what)
    {
        fixed (byte* a = sockaddr)
        {
            if (bind((int)fd.DangerousGetHandle(), a, (uint)sockaddr.Length) < 0)
                throw Errno.Error("bind", what);
        }
    }

    /// <summary>connect(2); EINPROGRESS (a non-blocking socket) counts as done.</summary>
    public static unsafe void Connect(SafeHandle fd, byte[] sockaddr, string what)
    {
        const int EInProgress = 115;
        fixed (byte* a = sockaddr)
        {
            if (connect((int)fd.DangerousGetHandle(), a, (uint)sockaddr.Length) < 0 && Errno.Last != EInProgress)
                throw Errno.Error("connect", what);
        }
    }

    public static void Listen(SafeHandle fd, int backlog, string what) =>
        Errno.Check(listen((int)fd.DangerousGetHandle(), backlog), "listen", what);

    public static void Shutdown(SafeHandle fd, int how, string what) =>
        Errno.Check(shutdown((int)fd.DangerousGetHandle(), how), "shutdown", what);

    /// <summary>An int-valued ioctl (SIOCINQ, SIOCOUTQ, SIOCOUTQNSD).</summary>
    public static unsafe int IoctlInt(SafeHandle fd, ulong request, string what)
    {
        int value = 0;
        if (ioctl((int)fd.DangerousGetHandle(), request, &value) < 0)
            throw Errno.Error($"ioctl(0x{request:x})", what);
        return value;
    }

    /// <summary>getsockopt into a buffer; returns the length the kernel filled.</summary>
    public static unsafe int GetBytes(SafeHandle fd, int level, int name, Span<byte> value, string what)
    {
        uint len = (uint)value.Length;
        fixed (byte* v = value)
        {
            if (getsockopt((int)fd.DangerousGetHandle(), level, name, v, &len) < 0)
                throw Errno.Error("getsockopt", $"{what} (option {level}/{name})");
        }
        return (int)len;
    }

    public static unsafe void SetBytes(SafeHandle fd, int level, int name, ReadOnlySpan<byte> value, string what)
    {
        fixed (byte* v = value)
        {
            if (setsockopt((int)fd.DangerousGetHandle(), level, name, v, (uint)value.Length) < 0)
                throw Errno.Error("setsockopt", $"{what} (option {level}/{name})");
        }
    }

    /// <summary>getsockopt of an int, naming what it was for when it fails.</summary>
    public static int GetInt(SafeHandle fd, int level, int name, string what)
    {
        Span<byte> v = stackalloc byte[4];
        GetBytes(fd, level, name, v, what);
        return BinaryPrimitives.ReadInt32LittleEndian(v);
    }

    /// <summary>Copies <paramref name="into"/>.Length queued bytes without taking them (MSG_PEEK); returns how many there were.</summary>
    public static unsafe int Peek(SafeHandle fd, Span<byte> into, string what)
    {
        fixed (byte* b = into)
        {
            nint n = recv((int)fd.DangerousGetHandle(), b, (nuint)into.Length, MsgPeek | MsgDontwait);
            if (n < 0)
                throw Errno.Error("recv(MSG_PEEK)", what);
            return (int)n;
        }
    }

    /// <summary>send(2) without waiting: returns the bytes taken, or -errno.</summary>
    public static unsafe int TrySend(SafeHandle fd, ReadOnlySpan<byte> data)
    {
        fixed (byte* b = data)
        {
            nint n = send((int)fd.DangerousGetHandle(), b, (nuint)data.Length, MsgDontwait);
            return n < 0 ? -Errno.Last : (int)n;
        }
    }

    [LibraryImport("libc", SetLastError = true)]
    private static unsafe partial int connect(int fd, byte* addr, uint len);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int shutdown(int fd, int how);

    [LibraryImport("libc", SetLastError = true)]
    private static unsafe partial int ioctl(int fd, ulong request, int* value);

    [LibraryImport("libc", SetLastError = true)]
    private static unsafe partial nint recv(int fd, byte* buf, nuint len, int flags);

    [LibraryImport("libc", SetLastError = true)]
    private static unsafe partial nint send(int fd, byte* buf, nuint len, int flags);
}
