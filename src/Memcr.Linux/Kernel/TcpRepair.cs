using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Memcr.Linux.Kernel;

/// <summary>
/// What TCP repair mode reads from an established connection and writes back into a new socket:
/// the sequence numbers of both queues and their bytes (the send queue holds sent-but-unacknowledged
/// bytes, then <see cref="Unsent"/> bytes never sent), the options negotiated at the handshake, the
/// timestamp clock and the window.
/// </summary>
public sealed record TcpConnectionState
{
    public const uint OptTimestamps = 1, OptSack = 2, OptWscale = 4;

    public required int State { get; init; }
    public required uint InSeq { get; init; }
    public required byte[] InQueue { get; init; }
    public required uint OutSeq { get; init; }
    public required byte[] OutQueue { get; init; }
    public required int Unsent { get; init; }
    public required uint Options { get; init; }
    public required uint SendWscale { get; init; }
    public required uint ReceiveWscale { get; init; }
    public required uint MssClamp { get; init; }
    public required uint Timestamp { get; init; }
    public TcpWindow? Window { get; init; }
}

/// <summary>struct tcp_repair_window.</summary>
public readonly record struct TcpWindow(uint SndWl1, uint SndWnd, uint MaxWindow, uint RcvWnd, uint RcvWup);

/// <summary>
/// TCP_REPAIR (needs CAP_NET_ADMIN): a socket in repair mode sends nothing, closes without a FIN
/// or reset, and lets its sequence numbers, queues and options be read and set. This is how an
/// established connection is saved and made again without its peer noticing.
/// </summary>
public static class TcpRepair
{
    private const int TcpInfo = 11, Repair = 19, RepairQueue = 20, QueueSeq = 21, RepairOptions = 22, TcpTimestamp = 24, RepairWindow = 29;
    private const int RecvQueue = 1, SendQueue = 2, NoQueue = 0;
    private const ulong SiocInq = 0x541b, SiocOutq = 0x5411, SiocOutqnsd = 0x894b;
    private const uint OptMaxseg = 2, OptWindow = 3, OptSackPerm = 4, OptTimestamp = 8;
    private const int ENoprotoopt = 92, ENobufs = 105;

    public static void On(SafeHandle sock, string what) => SocketCalls.SetInt(sock, SocketCalls.SolTcp, Repair, 1, $"{what}: TCP_REPAIR on");

    /// <summary>Repair mode off: the kernel sends a window probe and the connection runs again. SO_REUSEADDR is reset by this: set it again after.</summary>
    public static void Off(SafeHandle sock, string what) => SocketCalls.SetInt(sock, SocketCalls.SolTcp, Repair, 0, $"{what}: TCP_REPAIR off");

    /// <summary>The state of a connection in repair mode.</summary>
    public static TcpConnectionState Save(SafeHandle sock, string what)
    {
        Span<byte> info = stackalloc byte[8];
        SocketCalls.GetBytes(sock, SocketCalls.SolTcp, TcpInfo, info, $"{what}: TCP_INFO");
        int state = info[0];
        uint options = info[5];
        int outLen = SocketCalls.IoctlInt(sock, SiocOutq, $"{what}: SIOCOUTQ");
        int unsent = SocketCalls.IoctlInt(sock, SiocOutqnsd, $"{what}: SIOCOUTQNSD");
        int inLen = SocketCalls.IoctlInt(sock, SiocInq, $"{what}: SIOCINQ");
        uint mss = (uint)SocketCalls.GetInt(sock, SocketCalls.SolTcp, SocketCalls.TcpMaxseg, $"{what}: TCP_MAXSEG");
        uint timestamp = (options & TcpConnectionState.OptTimestamps) != 0
            ? (uint)SocketCalls.GetInt(sock, SocketCalls.SolTcp, TcpTimestamp, $"{what}: TCP_TIMESTAMP") : 0;
        TcpWindow? window = null;
        Span<byte> w = stackalloc byte[20];
        try
        {
            SocketCalls.GetBytes(sock, SocketCalls.SolTcp, RepairWindow, w, $"{what}: TCP_REPAIR_WINDOW");
            window = new TcpWindow(U32(w, 0), U32(w, 4), U32(w, 8), U32(w, 12), U32(w, 16));
        }
        catch (SyscallException e) when (e.Errno == ENoprotoopt)
        {
            // Kernels before 4.8 have no window to save.
        }
        var (inSeq, inQueue) = Queue(sock, RecvQueue, inLen, $"{what}: receive queue");
        var (outSeq, outQueue) = Queue(sock, SendQueue, outLen, $"{what}: send queue");
        return new TcpConnectionState
        {
            State = state,
            InSeq = inSeq,
            InQueue = inQueue,
            OutSeq = outSeq,
            OutQueue = outQueue,
            Unsent = unsent,
            Options = options,
            SendWscale = (options & TcpConnectionState.OptWscale) != 0 ? (uint)(info[6] & 0xf) : 0,
            ReceiveWscale = (options & TcpConnectionState.OptWscale) != 0 ? (uint)(info[6] >> 4) : 0,
            MssClamp = mss,
            Timestamp = timestamp,
            Window = window,
        };
    }

    private static (uint Seq, byte[] Bytes) Queue(SafeHandle sock, int queue, int length, string what)
    {
        SocketCalls.SetInt(sock, SocketCalls.SolTcp, RepairQueue, queue, what);
        uint seq = (uint)SocketCalls.GetInt(sock, SocketCalls.SolTcp, QueueSeq, $"{what}: TCP_QUEUE_SEQ");
        var bytes = new byte[length];
        if (length > 0)
        {
            // One byte more than announced proves the queue holds exactly what SIOC*Q said.
            var buf = new byte[length + 1];
            int n = SocketCalls.Peek(sock, buf, what);
            if (n != length)
                throw new SyscallException("recv(MSG_PEEK)", $"{what}: {n} bytes where {length} were queued", Errno.EIO);
            buf.AsSpan(0, length).CopyTo(bytes);
        }
        return (seq, bytes);
    }

    /// <summary>
    /// Makes an established connection of a new socket in repair mode: bound to
    /// <paramref name="local"/>, "connected" to <paramref name="peer"/> without a handshake, with
    /// the saved sequence numbers, options, timestamp, received bytes and sent-but-unacknowledged
    /// bytes. The never-sent bytes are left for <see cref="SendUnsent"/>.
    /// </summary>
    public static void Restore(SafeFileHandle sock, TcpConnectionState s, byte[] local, byte[] peer, string what)
    {
        SocketCalls.Bind(sock, local, what);
        SetSeq(sock, RecvQueue, s.InSeq - (uint)s.InQueue.Length, what);
        SetSeq(sock, SendQueue, s.OutSeq - (uint)s.OutQueue.Length, what);
        SocketCalls.Connect(sock, peer, what);
        var opts = new List<(uint Code, uint Value)>();
        if ((s.Options & TcpConnectionState.OptSack) != 0)
            opts.Add((OptSackPerm, 0));
        if ((s.Options & TcpConnectionState.OptWscale) != 0)
            opts.Add((OptWindow, s.SendWscale | (s.ReceiveWscale << 16)));
        if ((s.Options & TcpConnectionState.OptTimestamps) != 0)
            opts.Add((OptTimestamp, 0));
        opts.Add((OptMaxseg, s.MssClamp));
        var raw = new byte[8 * opts.Count];
        for (int i = 0; i < opts.Count; i++)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(raw.AsSpan(8 * i), opts[i].Code);
            BinaryPrimitives.WriteUInt32LittleEndian(raw.AsSpan(8 * i + 4), opts[i].Value);
        }
        SocketCalls.SetBytes(sock, SocketCalls.SolTcp, RepairOptions, raw, $"{what}: TCP_REPAIR_OPTIONS");
        if ((s.Options & TcpConnectionState.OptTimestamps) != 0)
            SocketCalls.SetInt(sock, SocketCalls.SolTcp, TcpTimestamp, (int)s.Timestamp, $"{what}: TCP_TIMESTAMP");
        Fill(sock, RecvQueue, s.InQueue, $"{what}: receive queue");
        Fill(sock, SendQueue, s.OutQueue.AsSpan(0, s.OutQueue.Length - s.Unsent), $"{what}: send queue");
        SocketCalls.SetInt(sock, SocketCalls.SolTcp, RepairQueue, NoQueue, what);
        if (s.Window is { } win)
        {
            Span<byte> w = stackalloc byte[20];
            BinaryPrimitives.WriteUInt32LittleEndian(w, win.SndWl1);
            BinaryPrimitives.WriteUInt32LittleEndian(w[4..], win.SndWnd);
            BinaryPrimitives.WriteUInt32LittleEndian(w[8..], win.MaxWindow);
            BinaryPrimitives.WriteUInt32LittleEndian(w[12..], win.RcvWnd);
            BinaryPrimitives.WriteUInt32LittleEndian(w[16..], win.RcvWup);
            SocketCalls.SetBytes(sock, SocketCalls.SolTcp, RepairWindow, w, $"{what}: TCP_REPAIR_WINDOW");
        }
    }

    /// <summary>Once out of repair mode: the bytes that were never sent go out as the process would have sent them.</summary>
    public static void SendUnsent(SafeHandle sock, TcpConnectionState s, string what)
    {
        var unsent = s.OutQueue.AsSpan(s.OutQueue.Length - s.Unsent);
        var waited = System.Diagnostics.Stopwatch.StartNew();
        while (unsent.Length > 0)
        {
            int n = SocketCalls.TrySend(sock, unsent);
            if (n == -Errno.EAGAIN && waited.Elapsed < TimeSpan.FromSeconds(10))
            {
                Thread.Sleep(1); // the peer is taking what was restored as sent
                continue;
            }
            if (n < 0)
                throw new SyscallException("send", $"{what}: {unsent.Length} unsent bytes", -n);
            unsent = unsent[n..];
        }
    }

    private static void SetSeq(SafeHandle sock, int queue, uint seq, string what)
    {
        SocketCalls.SetInt(sock, SocketCalls.SolTcp, RepairQueue, queue, what);
        SocketCalls.SetInt(sock, SocketCalls.SolTcp, QueueSeq, (int)seq, $"{what}: TCP_QUEUE_SEQ");
    }

    /// <summary>Puts bytes into a queue of a socket in repair mode, in pieces the kernel can take (it refuses too large a piece with ENOMEM/ENOBUFS).</summary>
    private static void Fill(SafeHandle sock, int queue, ReadOnlySpan<byte> data, string what)
    {
        if (data.IsEmpty)
            return;
        SocketCalls.SetInt(sock, SocketCalls.SolTcp, RepairQueue, queue, what);
        int piece = Math.Min(data.Length, 1 << 20);
        while (data.Length > 0)
        {
            int n = SocketCalls.TrySend(sock, data[..Math.Min(piece, data.Length)]);
            if (n < 0)
            {
                if ((-n is Errno.ENOMEM or ENobufs or Errno.EAGAIN) && piece > 1024)
                {
                    piece /= 2;
                    continue;
                }
                throw new SyscallException("send", $"{what}: {data.Length} bytes left", -n);
            }
            data = data[n..];
        }
    }

    private static uint U32(ReadOnlySpan<byte> b, int at) => BinaryPrimitives.ReadUInt32LittleEndian(b[at..]);
}
