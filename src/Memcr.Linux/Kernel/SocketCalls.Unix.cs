using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Memcr.Linux.Kernel;

/// <summary>A message taken from a socket's queue without removing it: its bytes and the descriptors it carries.</summary>
public sealed record PeekedMessage(byte[] Data, int[] Fds, int OtherControl);

/// <summary>UNIX sockets: pairs, names (path or abstract) as sock_diag gives them, and messages with the descriptors they pass.</summary>
public static partial class SocketCalls
{
    public const int AfUnix = 1, SockStream = 1, SockDgram = 2, SockSeqpacket = 5;
    public const int SoPeekOff = 42;
    private const int AfUnspec = 0, ScmRights = 1, MsgTrunc = 0x20, MsgCtrunc = 0x8, MsgCmsgCloexec = 0x40000000, MsgNosignal = 0x4000;

    /// <summary>sockaddr_un of a name as sock_diag and CRIU keep it: a path with its NUL, or an abstract name starting with NUL.</summary>
    public static byte[] UnixAddress(ReadOnlySpan<byte> name)
    {
        if (name.Length > 108)
            throw new ArgumentException($"UNIX socket name of {name.Length} bytes (at most 108)", nameof(name));
        var sa = new byte[2 + name.Length];
        sa[0] = AfUnix;
        name.CopyTo(sa.AsSpan(2));
        return sa;
    }

    /// <summary>A name as people read it: a path, or @ and the abstract name.</summary>
    public static string UnixName(ReadOnlySpan<byte> name) =>
        name.Length == 0 ? "(unnamed)" : name[0] == 0
            ? "@" + System.Text.Encoding.UTF8.GetString(name[1..]).Replace("\0", "\\0", StringComparison.Ordinal)
            : System.Text.Encoding.UTF8.GetString(name).TrimEnd('\0');

    /// <summary>
    /// The file a socket is bound to by path, opened O_PATH (SIOCUNIXFILE): its /proc/self/fd
    /// link is the path the socket was bound at, even when bound by a relative name, and says
    /// whether it was deleted.
    /// </summary>
    public static SafeFileHandle UnixFile(SafeHandle sock, string what)
    {
        const ulong SiocUnixFile = 0x89E0;
        int fd = ioctl_noarg((int)sock.DangerousGetHandle(), SiocUnixFile, 0);
        if (fd < 0)
            throw Errno.Error("ioctl(SIOCUNIXFILE)", what);
        return new SafeFileHandle(fd, true);
    }

    /// <summary>socketpair(AF_UNIX), close-on-exec.</summary>
    public static unsafe (SafeFileHandle, SafeFileHandle) Pair(int type, string what)
    {
        int* sv = stackalloc int[2];
        if (socketpair(AfUnix, type | SockCloexec, 0, sv) < 0)
            throw Errno.Error("socketpair(AF_UNIX)", what);
        return (new SafeFileHandle(sv[0], true), new SafeFileHandle(sv[1], true));
    }

    /// <summary>connect(AF_UNSPEC): a datagram socket forgets its peer (and, the kernel's rule, its queue).</summary>
    public static unsafe void Disconnect(SafeHandle fd, string what)
    {
        ushort family = AfUnspec;
        if (connect((int)fd.DangerousGetHandle(), (byte*)&family, 2) < 0)
            throw Errno.Error("connect(AF_UNSPEC)", what);
    }

    /// <summary>
    /// The next queued message past the peek offset (MSG_PEEK, SO_PEEK_OFF moving on): null when
    /// the queue is done. Passed descriptors arrive in this process, close-on-exec.
    /// </summary>
    public static unsafe PeekedMessage? PeekMessage(SafeHandle fd, byte[] buffer, string what)
    {
        const int ControlBytes = 4096;
        byte* control = stackalloc byte[ControlBytes];
        fixed (byte* b = buffer)
        {
            var iov = new IoVec { Base = b, Length = (nuint)buffer.Length };
            var msg = new MsgHdr { Iov = &iov, IovLen = 1, Control = control, ControlLen = ControlBytes };
            nint n = recvmsg((int)fd.DangerousGetHandle(), &msg, MsgPeek | MsgDontwait | MsgCmsgCloexec);
            if (n < 0)
            {
                if (Errno.Last == Errno.EAGAIN)
                    return null;
                throw Errno.Error("recvmsg(MSG_PEEK)", what);
            }
            var fds = new List<int>();
            int other = 0;
            for (nuint at = 0; at + 16 <= msg.ControlLen;)
            {
                var h = (CmsgHdr*)(control + at);
                if (h->Len < 16)
                    break;
                if (h->Level == SolSocket && h->Type == ScmRights)
                {
                    for (nuint i = 16; i + 4 <= h->Len; i += 4)
                        fds.Add(*(int*)(control + at + i));
                }
                else
                {
                    other = h->Type;
                }
                at += (h->Len + 7) & ~(nuint)7;
            }
            if ((msg.Flags & (MsgTrunc | MsgCtrunc)) != 0)
            {
                foreach (int f in fds)
                    _ = close(f);
                throw new SyscallException("recvmsg(MSG_PEEK)", what, 90, $"a queued message does not fit in {buffer.Length} bytes, or its descriptors in {ControlBytes}");
            }
            if (n == 0 && fds.Count == 0 && other == 0)
                return null;
            return new PeekedMessage(buffer.AsSpan(0, (int)n).ToArray(), [.. fds], other);
        }
    }

    /// <summary>
    /// sendmsg without waiting, passing <paramref name="fds"/> with SCM_RIGHTS, to
    /// <paramref name="to"/> (a sockaddr) or the peer; the whole message or an error naming what.
    /// </summary>
    public static unsafe void SendMessage(SafeHandle fd, ReadOnlySpan<byte> data, ReadOnlySpan<int> fds, byte[]? to, string what)
    {
        int controlLen = fds.Length == 0 ? 0 : 16 + ((fds.Length * 4 + 7) & ~7);
        byte* control = stackalloc byte[Math.Max(controlLen, 16)];
        if (fds.Length > 0)
        {
            var h = (CmsgHdr*)control;
            h->Len = (nuint)(16 + fds.Length * 4);
            h->Level = SolSocket;
            h->Type = ScmRights;
            for (int i = 0; i < fds.Length; i++)
                ((int*)(control + 16))[i] = fds[i];
        }
        fixed (byte* b = data)
        fixed (byte* a = to)
        {
            var iov = new IoVec { Base = b, Length = (nuint)data.Length };
            var msg = new MsgHdr { Name = a, NameLen = (uint)(to?.Length ?? 0), Iov = &iov, IovLen = 1, Control = controlLen == 0 ? null : control, ControlLen = (nuint)controlLen };
            nint n = sendmsg((int)fd.DangerousGetHandle(), &msg, MsgDontwait | MsgNosignal);
            if (n < 0)
                throw Errno.Error("sendmsg", what);
            if (n != data.Length)
                throw new SyscallException("sendmsg", what, Errno.EAGAIN, $"{n} of {data.Length} bytes taken");
        }
    }

    [StructLayout(LayoutKind.Sequential)]
    private unsafe struct IoVec
    {
        public byte* Base;
        public nuint Length;
    }

    [StructLayout(LayoutKind.Sequential)]
    private unsafe struct MsgHdr
    {
        public byte* Name;
        public uint NameLen;
        public IoVec* Iov;
        public nuint IovLen;
        public byte* Control;
        public nuint ControlLen;
        public int Flags;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct CmsgHdr
    {
        public nuint Len;
        public int Level;
        public int Type;
    }

    [LibraryImport("libc", SetLastError = true)]
    private static unsafe partial int socketpair(int domain, int type, int protocol, int* sv);

    [LibraryImport("libc", SetLastError = true)]
    private static unsafe partial nint recvmsg(int fd, MsgHdr* msg, int flags);

    [LibraryImport("libc", SetLastError = true)]
    private static unsafe partial nint sendmsg(int fd, MsgHdr* msg, int flags);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int close(int fd);

    [LibraryImport("libc", EntryPoint = "ioctl", SetLastError = true)]
    private static partial int ioctl_noarg(int fd, ulong request, nint arg);
}
