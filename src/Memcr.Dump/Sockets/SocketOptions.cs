using System.Buffers.Binary;
using Memcr.CriuImages;
using Memcr.Linux;
using Memcr.Linux.Kernel;
using Microsoft.Win32.SafeHandles;
using S = Memcr.Linux.Kernel.SocketCalls;

namespace Memcr.Dump.Sockets;

/// <summary>The SOL_SOCKET, IP and TCP options of a socket as CRIU keeps them (sk_opts_entry, ip_opts_entry, tcp_opts_entry), read and set again.</summary>
internal static class SocketOptions
{
    private const int AfUnix = 1, SoPasssec = 34, SoBindtodevice = 25;

    public static sk_opts_entry Dump(SafeFileHandle sock, int family, string what)
    {
        int Int(int name) => S.GetInt(sock, S.SolSocket, name, what);
        var (sndSec, sndUsec) = S.GetTime(sock, S.SoSndtimeo);
        var (rcvSec, rcvUsec) = S.GetTime(sock, S.SoRcvtimeo);
        var o = new sk_opts_entry
        {
            SoSndbuf = (uint)Int(S.SoSndbuf),
            SoRcvbuf = (uint)Int(S.SoRcvbuf),
            SoSndTmoSec = (ulong)sndSec, SoSndTmoUsec = (ulong)sndUsec, SoRcvTmoSec = (ulong)rcvSec, SoRcvTmoUsec = (ulong)rcvUsec,
            Reuseaddr = Int(S.SoReuseaddr) != 0,
            SoPriority = (uint)Int(S.SoPriority),
            SoRcvlowat = (uint)Int(S.SoRcvlowat),
            SoDontroute = Int(S.SoDontroute) != 0,
            SoNoCheck = Int(S.SoNoCheck) != 0,
            SoReuseport = Int(S.SoReuseport) != 0,
            SoBroadcast = Int(S.SoBroadcast) != 0,
            SoKeepalive = Int(S.SoKeepalive) != 0,
            SoOobinline = (uint)Int(S.SoOobinline),
            SoBufLock = (uint)Int(S.SoBufLock),
        };
        uint mark = (uint)Int(S.SoMark);
        if (mark != 0)
            o.SoMark = mark;
        if (family == AfUnix)
        {
            o.SoPasscred = Int(S.SoPasscred) != 0;
            o.SoPasssec = Int(SoPasssec) != 0;
        }
        Span<byte> linger = stackalloc byte[8];
        S.GetBytes(sock, S.SolSocket, S.SoLinger, linger, what);
        if (BinaryPrimitives.ReadInt32LittleEndian(linger) != 0)
            o.SoLinger = (uint)BinaryPrimitives.ReadInt32LittleEndian(linger[4..]);
        Span<byte> dev = stackalloc byte[16];
        int n = S.GetBytes(sock, S.SolSocket, SoBindtodevice, dev, what);
        if (n > 0 && dev[0] != 0)
            o.SoBoundDev = System.Text.Encoding.ASCII.GetString(dev[..n]).TrimEnd('\0');
        return o;
    }

    /// <summary>
    /// Sets the dumped options. Buffer sizes are forced (SO_*BUFFORCE, as the kernel doubles what is
    /// asked, half is asked), then the lock on them is put back as it was so autotuning goes on.
    /// </summary>
    public static void Restore(SafeFileHandle sock, sk_opts_entry o, string what)
    {
        void Set(int name, int value) => S.SetInt(sock, S.SolSocket, name, value, what);
        Set(S.SoSndbufforce, (int)(o.SoSndbuf / 2));
        Set(S.SoRcvbufforce, (int)(o.SoRcvbuf / 2));
        if (o.HasSoBufLock)
            Set(S.SoBufLock, (int)o.SoBufLock);
        if ((o.SoSndTmoSec | o.SoSndTmoUsec) != 0)
            S.SetTime(sock, S.SoSndtimeo, (long)o.SoSndTmoSec, (long)o.SoSndTmoUsec, what);
        if ((o.SoRcvTmoSec | o.SoRcvTmoUsec) != 0)
            S.SetTime(sock, S.SoRcvtimeo, (long)o.SoRcvTmoSec, (long)o.SoRcvTmoUsec, what);
        Set(S.SoReuseaddr, o.Reuseaddr ? 1 : 0);
        if (o.SoReuseport)
            Set(S.SoReuseport, 1);
        if (o.SoPriority != 0)
            Set(S.SoPriority, (int)o.SoPriority);
        if (o.HasSoRcvlowat && o.SoRcvlowat > 1)
            Set(S.SoRcvlowat, (int)o.SoRcvlowat);
        if (o.SoMark != 0)
            Set(S.SoMark, (int)o.SoMark);
        if (o.SoPasscred)
            Set(S.SoPasscred, 1);
        if (o.SoPasssec)
            Set(SoPasssec, 1);
        if (o.SoDontroute)
            Set(S.SoDontroute, 1);
        if (o.SoNoCheck)
            Set(S.SoNoCheck, 1);
        if (o.SoBroadcast)
            Set(S.SoBroadcast, 1);
        if (o.SoKeepalive)
            Set(S.SoKeepalive, 1);
        if (o.SoOobinline != 0)
            Set(S.SoOobinline, 1);
        if (o.HasSoLinger)
        {
            Span<byte> linger = stackalloc byte[8];
            BinaryPrimitives.WriteInt32LittleEndian(linger, 1);
            BinaryPrimitives.WriteInt32LittleEndian(linger[4..], (int)o.SoLinger);
            S.SetBytes(sock, S.SolSocket, S.SoLinger, linger, what);
        }
        if (o.SoBoundDev is { Length: > 0 } dev)
            S.SetBytes(sock, S.SolSocket, SoBindtodevice, System.Text.Encoding.ASCII.GetBytes(dev + "\0"), what);
    }

    public static ip_opts_entry DumpIp(SafeFileHandle sock, int family, string what)
    {
        var e = new ip_opts_entry();
        if (family == InetDiag.AfInet6)
        {
            if (S.GetInt(sock, S.SolIpv6, S.Ipv6Freebind, what) != 0)
                e.Freebind = true;
            if (S.GetInt(sock, S.SolIpv6, S.Ipv6Recvpktinfo, what) != 0)
                e.Pktinfo = true;
            return e;
        }
        if (S.GetInt(sock, S.SolIp, S.IpFreebind, what) != 0)
            e.Freebind = true;
        if (S.GetInt(sock, S.SolIp, S.IpPktinfo, what) != 0)
            e.Pktinfo = true;
        uint tos = (uint)S.GetInt(sock, S.SolIp, S.IpTos, what);
        if (tos != 0)
            e.Tos = tos;
        uint ttl = (uint)S.GetInt(sock, S.SolIp, S.IpTtl, what);
        if (ttl != 0)
            e.Ttl = ttl;
        return e;
    }

    public static void RestoreIp(SafeFileHandle sock, int family, ip_opts_entry e, string what)
    {
        if (family == InetDiag.AfInet6)
        {
            if (e.Freebind)
                S.SetInt(sock, S.SolIpv6, S.Ipv6Freebind, 1, what);
            if (e.Pktinfo)
                S.SetInt(sock, S.SolIpv6, S.Ipv6Recvpktinfo, 1, what);
            return;
        }
        if (e.Freebind)
            S.SetInt(sock, S.SolIp, S.IpFreebind, 1, what);
        if (e.Pktinfo)
            S.SetInt(sock, S.SolIp, S.IpPktinfo, 1, what);
        if (e.HasTos)
            S.SetInt(sock, S.SolIp, S.IpTos, (int)e.Tos, what);
        // The default TTL reads back as the route's (64): only another value is set.
        if (e.HasTtl && e.Ttl != 64)
            S.SetInt(sock, S.SolIp, S.IpTtl, (int)e.Ttl, what);
    }

    public static tcp_opts_entry DumpTcp(SafeFileHandle sock, string what)
    {
        int Int(int name) => S.GetInt(sock, S.SolTcp, name, what);
        var e = new tcp_opts_entry();
        if (Int(S.TcpNodelay) != 0)
            e.Nodelay = true;
        if (Int(S.TcpCork) != 0)
            e.Cork = true;
        e.Keepcnt = (uint)Int(S.TcpKeepcnt);
        e.Keepidle = (uint)Int(S.TcpKeepidle);
        e.Keepintvl = (uint)Int(S.TcpKeepintvl);
        return e;
    }

    public static void RestoreTcp(SafeFileHandle sock, tcp_opts_entry e, string what)
    {
        if (e.Nodelay)
            S.SetInt(sock, S.SolTcp, S.TcpNodelay, 1, what);
        if (e.Cork)
            S.SetInt(sock, S.SolTcp, S.TcpCork, 1, what);
        if (e.Keepcnt != 0)
            S.SetInt(sock, S.SolTcp, S.TcpKeepcnt, (int)e.Keepcnt, what);
        if (e.Keepidle != 0)
            S.SetInt(sock, S.SolTcp, S.TcpKeepidle, (int)e.Keepidle, what);
        if (e.Keepintvl != 0)
            S.SetInt(sock, S.SolTcp, S.TcpKeepintvl, (int)e.Keepintvl, what);
    }

    /// <summary>A failing option names the socket; every option error is a restore error.</summary>
    public static CriuModeException Failed(string what, SyscallException e) => new($"{what}: {e.Message}", e);
}
