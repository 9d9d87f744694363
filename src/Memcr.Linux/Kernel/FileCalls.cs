using System.Buffers.Binary;
using Microsoft.Win32.SafeHandles;

namespace Memcr.Linux.Kernel;

/// <summary>What statx(2) says about a file.</summary>
public readonly record struct FileStatus(uint Mode, ulong Inode, long Size, uint DevMajor, uint DevMinor, uint RdevMajor, uint RdevMinor, ulong MountId, uint Uid, uint Gid)
{
    private const uint TypeMask = 0xf000;

    public bool IsRegular => (Mode & TypeMask) == 0x8000;
    public bool IsDirectory => (Mode & TypeMask) == 0x4000;
    public bool IsCharDevice => (Mode & TypeMask) == 0x2000;
    public bool IsBlockDevice => (Mode & TypeMask) == 0x6000;
    public bool IsFifo => (Mode & TypeMask) == 0x1000;
    public bool IsSocket => (Mode & TypeMask) == 0xc000;
    public bool IsSymlink => (Mode & TypeMask) == 0xa000;

    /// <summary>st_rdev in the kernel's encoding (major &lt;&lt; 20 | minor), as CRIU's images keep it.</summary>
    public uint KernelRdev => (RdevMajor << 20) | RdevMinor;

    /// <summary>st_rdev as glibc's makedev() encodes it (what stat(2) returns).</summary>
    public ulong Rdev => ((ulong)(RdevMinor & 0xff)) | ((ulong)(RdevMajor & 0xfff) << 8) | ((ulong)(RdevMinor & ~0xffu) << 12) | ((ulong)(RdevMajor & ~0xfffu) << 32);

    /// <summary>st_dev as glibc's makedev() encodes it.</summary>
    public ulong Dev => ((ulong)(DevMinor & 0xff)) | ((ulong)(DevMajor & 0xfff) << 8) | ((ulong)(DevMinor & ~0xffu) << 12) | ((ulong)(DevMajor & ~0xfffu) << 32);
}

/// <summary>File calls .NET does not expose: statx, raw open flags, positions, pipes.</summary>
public static class FileCalls
{
    private const int AtEmptyPath = 0x1000;
    private const uint StatxBasicAndMount = 0x7ff | 0x1000;

    /// <summary>statx of a path; <paramref name="follow"/> follows a final symlink (/proc/PID/fd/N to its file).</summary>
    public static unsafe FileStatus Stat(string path, bool follow = true)
    {
        byte* buf = stackalloc byte[256];
        if (Interop.Libc.statx(Interop.Libc.AT_FDCWD, path, follow ? 0 : Interop.Libc.AT_SYMLINK_NOFOLLOW, StatxBasicAndMount, buf) < 0)
            throw Errno.Error("statx", path);
        return Parse(new ReadOnlySpan<byte>(buf, 256));
    }

    public static unsafe FileStatus Stat(SafeFileHandle fd, string what)
    {
        byte* buf = stackalloc byte[256];
        if (Interop.Libc.statx_fd((int)fd.DangerousGetHandle(), "", AtEmptyPath, StatxBasicAndMount, buf) < 0)
            throw Errno.Error("statx", what);
        return Parse(new ReadOnlySpan<byte>(buf, 256));
    }

    private static FileStatus Parse(ReadOnlySpan<byte> b) => new(
        Mode: BinaryPrimitives.ReadUInt16LittleEndian(b[28..]),
        Inode: BinaryPrimitives.ReadUInt64LittleEndian(b[32..]),
        Size: BinaryPrimitives.ReadInt64LittleEndian(b[40..]),
        DevMajor: BinaryPrimitives.ReadUInt32LittleEndian(b[136..]),
        DevMinor: BinaryPrimitives.ReadUInt32LittleEndian(b[140..]),
        RdevMajor: BinaryPrimitives.ReadUInt32LittleEndian(b[128..]),
        RdevMinor: BinaryPrimitives.ReadUInt32LittleEndian(b[132..]),
        MountId: BinaryPrimitives.ReadUInt64LittleEndian(b[144..]),
        Uid: BinaryPrimitives.ReadUInt32LittleEndian(b[20..]),
        Gid: BinaryPrimitives.ReadUInt32LittleEndian(b[24..]));

    /// <summary>open(2) with raw flags (O_PATH, O_NOATIME, ...), close-on-exec added.</summary>
    public static SafeFileHandle Open(string path, int flags, int mode = 0)
    {
        int fd = Interop.Libc.open(path, flags | Interop.Libc.O_CLOEXEC, mode);
        if (fd < 0)
            throw Errno.Error("open", path);
        return new SafeFileHandle(fd, ownsHandle: true);
    }

    public static long Seek(SafeFileHandle fd, long offset, string what)
    {
        long r = Interop.Libc.lseek((int)fd.DangerousGetHandle(), offset, 0);
        if (r < 0)
            throw Errno.Error("lseek", what);
        return r;
    }

    /// <summary>The file status flags (O_*) of an open file.</summary>
    public static int StatusFlags(SafeFileHandle fd) => Interop.Libc.fcntl((int)fd.DangerousGetHandle(), Interop.Libc.F_GETFL, 0);

    /// <summary>A new pipe, both ends close-on-exec (and non-blocking with <paramref name="nonBlocking"/>).</summary>
    public static unsafe (SafeFileHandle Read, SafeFileHandle Write) Pipe(bool nonBlocking = false)
    {
        int* fds = stackalloc int[2];
        if (Interop.Libc.pipe2(fds, Interop.Libc.O_CLOEXEC | (nonBlocking ? Interop.Libc.O_NONBLOCK : 0)) < 0)
            throw Errno.Error("pipe2", "a new pipe");
        return (new SafeFileHandle(fds[0], true), new SafeFileHandle(fds[1], true));
    }

    public static int PipeSize(SafeFileHandle fd) => Interop.Libc.fcntl((int)fd.DangerousGetHandle(), Interop.Libc.F_GETPIPE_SZ, 0);

    public static void SetPipeSize(SafeFileHandle fd, int size, string what)
    {
        if (Interop.Libc.fcntl((int)fd.DangerousGetHandle(), Interop.Libc.F_SETPIPE_SZ, size) < 0)
            throw Errno.Error("fcntl(F_SETPIPE_SZ)", what);
    }

    /// <summary>Bytes waiting in a pipe (FIONREAD).</summary>
    public static unsafe int Available(SafeFileHandle fd, string what)
    {
        int n;
        if (Interop.Libc.ioctl((int)fd.DangerousGetHandle(), Interop.Libc.FIONREAD, &n) < 0)
            throw Errno.Error("ioctl(FIONREAD)", what);
        return n;
    }

    /// <summary>Copies up to <paramref name="length"/> bytes from one pipe to another without consuming them (tee(2)).</summary>
    public static long Tee(SafeFileHandle from, SafeFileHandle to, long length, string what)
    {
        nint r = Interop.Libc.tee((int)from.DangerousGetHandle(), (int)to.DangerousGetHandle(), (nuint)length, Interop.Libc.SPLICE_F_NONBLOCK);
        if (r < 0 && Errno.Last != Errno.EAGAIN)
            throw Errno.Error("tee", what);
        return Math.Max(0, r);
    }

    public static unsafe void WriteAll(SafeFileHandle fd, ReadOnlySpan<byte> data, string what)
    {
        fixed (byte* p = data)
        {
            int done = 0;
            while (done < data.Length)
            {
                nint n = Interop.Libc.write((int)fd.DangerousGetHandle(), p + done, (nuint)(data.Length - done));
                if (n < 0)
                {
                    if (Errno.Last == Errno.EINTR)
                        continue;
                    throw Errno.Error("write", what);
                }
                done += (int)n;
            }
        }
    }

    public static unsafe int Read(SafeFileHandle fd, Span<byte> into, string what)
    {
        fixed (byte* p = into)
        {
            nint n = Interop.Libc.read((int)fd.DangerousGetHandle(), p, (nuint)into.Length);
            if (n < 0)
                throw Errno.Error("read", what);
            return (int)n;
        }
    }

    /// <summary>The owner of an open file for SIGIO (F_GETOWN_EX: type and pid) and its signal (F_GETSIG).</summary>
    public static unsafe (int Type, int Pid, int Signal) Owner(SafeFileHandle fd)
    {
        const int FGetOwnEx = 16, FGetSig = 11;
        int* owner = stackalloc int[2];
        int fdn = (int)fd.DangerousGetHandle();
        if (Interop.Libc.fcntl(fdn, FGetOwnEx, (long)owner) < 0)
            return (0, 0, 0);
        int sig = Interop.Libc.fcntl(fdn, FGetSig, 0);
        return (owner[0], owner[1], Math.Max(0, sig));
    }

    /// <summary>A new eventfd holding <paramref name="count"/> (close-on-exec added to <paramref name="flags"/>).</summary>
    public static SafeFileHandle EventFd(ulong count, int flags)
    {
        int fd = Interop.Libc.eventfd(0, flags | Interop.Libc.O_CLOEXEC);
        if (fd < 0)
            throw Errno.Error("eventfd", $"count {count}");
        var h = new SafeFileHandle(fd, true);
        if (count > 0)
            WriteAll(h, BitConverter.GetBytes(count), "a new eventfd");
        return h;
    }

    public static void SetStatusFlags(SafeFileHandle fd, int flags, string what)
    {
        if (Interop.Libc.fcntl((int)fd.DangerousGetHandle(), Interop.Libc.F_SETFL, flags) < 0)
            throw Errno.Error("fcntl(F_SETFL)", what);
    }

    /// <summary>A new signalfd for <paramref name="mask"/> (close-on-exec added to <paramref name="flags"/>).</summary>
    public static unsafe SafeFileHandle SignalFd(ulong mask, int flags)
    {
        int fd = Interop.Libc.signalfd(-1, &mask, flags | Interop.Libc.O_CLOEXEC);
        if (fd < 0)
            throw Errno.Error("signalfd", $"mask 0x{mask:x}");
        return new SafeFileHandle(fd, true);
    }

    /// <summary>
    /// A new timerfd on <paramref name="clock"/>, armed to expire in value and then every interval
    /// (seconds, nanoseconds), with <paramref name="ticks"/> expirations waiting to be read. A
    /// periodic timer whose expiry was not yet read has no time left (the kernel re-arms it on
    /// the read): it is armed one interval ahead, its waiting expirations given back.
    /// </summary>
    public static unsafe SafeFileHandle TimerFd(int clock, int flags, (long Sec, long Nsec) interval, (long Sec, long Nsec) value, ulong ticks)
    {
        const nuint TfdIocSetTicks = 0x40085400; // _IOW('T', 0, u64)
        int fd = Interop.Libc.timerfd_create(clock, flags | Interop.Libc.O_CLOEXEC);
        if (fd < 0)
            throw Errno.Error("timerfd_create", $"clock {clock}");
        var h = new SafeFileHandle(fd, true);
        if (value == (0, 0) && ticks > 0)
            value = interval;
        if (value != (0, 0))
        {
            long* spec = stackalloc long[4];
            spec[0] = interval.Sec;
            spec[1] = interval.Nsec;
            spec[2] = value.Sec;
            spec[3] = value.Nsec;
            if (Interop.Libc.timerfd_settime(fd, 0, spec, null) < 0)
                throw Errno.Error("timerfd_settime", $"a timerfd on clock {clock}");
        }
        if (ticks > 0 && Interop.Libc.ioctl(fd, TfdIocSetTicks, &ticks) < 0)
            throw Errno.Error("ioctl(TFD_IOC_SET_TICKS)", $"a timerfd on clock {clock} ({ticks} expirations)");
        return h;
    }

    public static SafeFileHandle EpollCreate()
    {
        int fd = Interop.Libc.epoll_create1(Interop.Libc.O_CLOEXEC);
        if (fd < 0)
            throw Errno.Error("epoll_create1", "a new epoll");
        return new SafeFileHandle(fd, true);
    }

    /// <summary>A new memfd (close-on-exec, sealing allowed) of <paramref name="size"/> bytes.</summary>
    public static SafeFileHandle MemfdCreate(string name, long size)
    {
        const uint MfdCloexec = 1, MfdAllowSealing = 2;
        int fd = Interop.Libc.memfd_create(name, MfdCloexec | MfdAllowSealing);
        if (fd < 0)
            throw Errno.Error("memfd_create", name);
        var h = new SafeFileHandle(fd, true);
        if (Interop.Libc.ftruncate(fd, size) < 0)
            throw Errno.Error("ftruncate", $"memfd {name} ({size} bytes)");
        return h;
    }

    /// <summary>F_GET_SEALS: the seals of a memfd (0 for a file that cannot be sealed).</summary>
    public static int Seals(SafeFileHandle fd)
    {
        int r = Interop.Libc.fcntl((int)fd.DangerousGetHandle(), Interop.Libc.F_GET_SEALS, 0);
        return r < 0 ? 0 : r;
    }

    public static void AddSeals(SafeFileHandle fd, int seals, string what)
    {
        if (seals != 0 && Interop.Libc.fcntl((int)fd.DangerousGetHandle(), Interop.Libc.F_ADD_SEALS, seals) < 0)
            throw Errno.Error("fcntl(F_ADD_SEALS)", what);
    }

    /// <summary>The ranges of a file that hold data (SEEK_DATA / SEEK_HOLE), up to <paramref name="size"/>.</summary>
    public static List<(long Start, long End)> DataRanges(SafeFileHandle fd, long size)
    {
        var ranges = new List<(long, long)>();
        int f = (int)fd.DangerousGetHandle();
        long at = 0;
        while (at < size)
        {
            long data = Interop.Libc.lseek(f, at, Interop.Libc.SEEK_DATA);
            if (data < 0)
                break; // ENXIO: no data after at
            long hole = Interop.Libc.lseek(f, data, Interop.Libc.SEEK_HOLE);
            if (hole < 0)
                hole = size;
            ranges.Add((data, Math.Min(hole, size)));
            at = hole;
        }
        return ranges;
    }

    /// <summary>Removes a path (a stale socket file); a missing one is fine.</summary>
    public static void Unlink(string path)
    {
        if (Interop.Libc.unlink(path) < 0 && Errno.Last != Errno.ENOENT)
            throw Errno.Error("unlink", path);
    }

    public static SafeFileHandle Dup(int fd, string what)
    {
        int r = Interop.Libc.dup(fd);
        if (r < 0)
            throw Errno.Error("dup", what);
        return new SafeFileHandle(r, true);
    }
}
