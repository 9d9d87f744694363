using System.Buffers.Binary;
using System.Net;

namespace Memcr.Linux.Kernel;

/// <summary>
/// A TCP or UDP socket as inet_diag describes it. Addresses are in network byte order as the
/// kernel keeps them (4 bytes for AF_INET, 16 for AF_INET6); for a listening socket
/// <see cref="SendQueue"/> is its backlog.
/// </summary>
public sealed record InetSocketInfo(int Family, int Protocol, int State, byte[] Source, int SourcePort, byte[] Destination, int DestinationPort,
    uint Inode, uint ReceiveQueue, uint SendQueue, int Shutdown)
{
    public const int Established = 1, Close = 7, Listen = 10;

    /// <summary>TCP state names as the kernel's tcp_states.h spells them.</summary>
    public static string StateName(int state) => state switch
    {
        1 => "ESTABLISHED", 2 => "SYN_SENT", 3 => "SYN_RECV", 4 => "FIN_WAIT1", 5 => "FIN_WAIT2", 6 => "TIME_WAIT",
        7 => "CLOSE", 8 => "CLOSE_WAIT", 9 => "LAST_ACK", 10 => "LISTEN", 11 => "CLOSING", _ => $"state {state}",
    };

    /// <summary>"127.0.0.1:18080 -> 127.0.0.1:45776" (IPv6 addresses in brackets).</summary>
    public string Describe() => DestinationPort == 0 && State != Established
        ? Endpoint(Source, SourcePort)
        : $"{Endpoint(Source, SourcePort)} -> {Endpoint(Destination, DestinationPort)}";

    public static string Endpoint(byte[] address, int port)
    {
        var ip = new IPAddress(address);
        return ip.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 ? $"[{ip}]:{port}" : $"{ip}:{port}";
    }
}

/// <summary>TCP and UDP sockets of this network namespace through NETLINK_SOCK_DIAG (inet_diag).</summary>
public static class InetDiag
{
    public const int AfInet = 2, AfInet6 = 10, Tcp = 6, Udp = 17;
    private const int ShutdownAttribute = 8;

    /// <summary>Every socket of <paramref name="family"/> and <paramref name="protocol"/>, by inode.</summary>
    public static Dictionary<uint, InetSocketInfo> All(int family, int protocol)
    {
        var req = new byte[56];
        req[0] = (byte)family;
        req[1] = (byte)protocol;
        BinaryPrimitives.WriteUInt32LittleEndian(req.AsSpan(4), uint.MaxValue); // every state
        var result = new Dictionary<uint, InetSocketInfo>();
        SockDiag.Dump(req, $"inet_diag ({(family == AfInet ? "IPv4" : "IPv6")} {(protocol == Tcp ? "TCP" : "UDP")})", m =>
        {
            if (m.Length >= 72)
            {
                var info = Parse(m.ToArray(), protocol);
                result[info.Inode] = info;
            }
        });
        return result;
    }

    /// <summary>Every TCP and UDP socket of both families, by inode.</summary>
    public static Dictionary<uint, InetSocketInfo> All()
    {
        var all = new Dictionary<uint, InetSocketInfo>();
        foreach (int family in (int[])[AfInet, AfInet6])
        {
            foreach (int protocol in (int[])[Tcp, Udp])
            {
                foreach (var (ino, info) in All(family, protocol))
                    all[ino] = info;
            }
        }
        return all;
    }

    private static InetSocketInfo Parse(byte[] m, int protocol)
    {
        int family = m[0];
        int alen = family == AfInet ? 4 : 16;
        int shutdown = 0;
        foreach (var (kind, v) in SockDiag.Attributes(m, 72))
        {
            if (kind == ShutdownAttribute && v.Length > 0)
                shutdown = v[0];
        }
        return new InetSocketInfo(
            Family: family,
            Protocol: protocol,
            State: m[1],
            Source: m[8..(8 + alen)],
            SourcePort: BinaryPrimitives.ReadUInt16BigEndian(m.AsSpan(4)),
            Destination: m[24..(24 + alen)],
            DestinationPort: BinaryPrimitives.ReadUInt16BigEndian(m.AsSpan(6)),
            Inode: BinaryPrimitives.ReadUInt32LittleEndian(m.AsSpan(68)),
            ReceiveQueue: BinaryPrimitives.ReadUInt32LittleEndian(m.AsSpan(56)),
            SendQueue: BinaryPrimitives.ReadUInt32LittleEndian(m.AsSpan(60)),
            Shutdown: shutdown);
    }
}
