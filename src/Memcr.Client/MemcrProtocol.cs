using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;

namespace Memcr.Client;

/// <summary>Commands of the memcr service protocol (the original's, plus <see cref="Status"/>).</summary>
public enum MemcrCommand
{
    Checkpoint = 100,
    Restore = 101,

    /// <summary>Not in the original: answered with a response code, a length and that many bytes of JSON.</summary>
    Status = 102,

    /// <summary>
    /// Not in the original: ends the write tracking of a process restored with --incremental (it
    /// is back for good) and removes its kept images. Answered 0 (also when nothing was tracked),
    /// -1 when the process is checkpointed or cannot be seized, -2 for an invalid pid.
    /// </summary>
    Forget = 103,
}

/// <summary>Response codes of the memcr service (the original's).</summary>
public enum MemcrResponse
{
    Ok = 0,
    Error = -1,
    InvalidPid = -2,
}

/// <summary>
/// The wire contract of the memcr service, as the original defines it: a request is 8 bytes,
/// <c>int32 cmd; int32 pid</c>, a response 4 bytes, <c>int32 code</c>, both in the machine's
/// byte order (little-endian on every architecture memcr runs on). A status request (102) is
/// answered with the code, then <c>uint32 length</c> and that many bytes of UTF-8 JSON.
/// </summary>
public static class MemcrProtocol
{
    public const int RequestSize = 8;
    public const int ResponseSize = 4;

    /// <summary>Largest status document a client accepts.</summary>
    public const int MaxStatusBytes = 16 << 20;

    public static void WriteRequest(Span<byte> dest, MemcrCommand command, int pid)
    {
        if (BitConverter.IsLittleEndian)
        {
            BinaryPrimitives.WriteInt32LittleEndian(dest, (int)command);
            BinaryPrimitives.WriteInt32LittleEndian(dest[4..], pid);
        }
        else
        {
            BinaryPrimitives.WriteInt32BigEndian(dest, (int)command);
            BinaryPrimitives.WriteInt32BigEndian(dest[4..], pid);
        }
    }

    public static (int Command, int Pid) ReadRequest(ReadOnlySpan<byte> src) =>
        (ReadInt32(src), ReadInt32(src[4..]));

    public static int ReadInt32(ReadOnlySpan<byte> src) =>
        BitConverter.IsLittleEndian ? BinaryPrimitives.ReadInt32LittleEndian(src) : BinaryPrimitives.ReadInt32BigEndian(src);

    public static void WriteInt32(Span<byte> dest, int value)
    {
        if (BitConverter.IsLittleEndian)
            BinaryPrimitives.WriteInt32LittleEndian(dest, value);
        else
            BinaryPrimitives.WriteInt32BigEndian(dest, value);
    }

    /// <summary>
    /// Where the service listens, as memcr and memcr-client take it: a number is a TCP port on
    /// 127.0.0.1, anything else the path of a UNIX socket.
    /// </summary>
    public static EndPoint ParseLocation(string location)
    {
        ArgumentException.ThrowIfNullOrEmpty(location);
        if (int.TryParse(location, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int port))
        {
            if (port is <= 0 or > 65535)
                throw new ArgumentException($"TCP port {port} is out of range 1..65535", nameof(location));
            return new IPEndPoint(IPAddress.Loopback, port);
        }
        return new UnixDomainSocketEndPoint(location);
    }
}
