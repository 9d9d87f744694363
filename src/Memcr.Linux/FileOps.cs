using Microsoft.Win32.SafeHandles;

namespace Memcr.Linux;

/// <summary>File operations .NET does not expose: preallocation, writeback control, page-cache eviction, polling.</summary>
public static class FileOps
{
    /// <summary>
    /// Reserves disk space so that a full disk is found before anything else happens. Returns false
    /// where the file system cannot preallocate (EOPNOTSUPP); throws on ENOSPC and other errors.
    /// </summary>
    public static bool Preallocate(SafeFileHandle file, long length, string path)
    {
        if (length <= 0)
            return true;
        if (Interop.Libc.fallocate((int)file.DangerousGetHandle(), 0, 0, length) == 0)
            return true;
        int errno = Errno.Last;
        if (errno == Errno.EOPNOTSUPP)
            return false;
        throw new SyscallException("fallocate", $"{path} ({length} bytes)", errno);
    }

    /// <summary>
    /// Opens a file with O_DIRECT: I/O bypasses the page cache, so writing an image neither fills
    /// RAM with dirty cache nor needs fresh pages for it. Null where the file system refuses it.
    /// Buffers, offsets and lengths must then be aligned to the logical block size.
    /// </summary>
    public static SafeFileHandle? OpenDirect(string path, bool write)
    {
        int flags = (write ? Interop.Libc.O_WRONLY : Interop.Libc.O_RDONLY) | Interop.Libc.O_DIRECT | Interop.Libc.O_CLOEXEC;
        int fd = Interop.Libc.open(path, flags, 0);
        if (fd >= 0)
            return new SafeFileHandle(fd, ownsHandle: true);
        int errno = Errno.Last;
        if (errno == Errno.EINVAL || errno == Errno.EOPNOTSUPP)
            return null;
        throw new SyscallException("open(O_DIRECT)", path, errno);
    }

    public static void Truncate(SafeFileHandle file, long length, string path) =>
        Errno.Check(Interop.Libc.ftruncate((int)file.DangerousGetHandle(), length), "ftruncate", path);

    /// <summary>Starts writeback of a range without waiting for it (sync_file_range(2)).</summary>
    public static void StartWriteback(SafeFileHandle file, long offset, long length) =>
        Interop.Libc.sync_file_range((int)file.DangerousGetHandle(), offset, length, Interop.Libc.SYNC_FILE_RANGE_WRITE);

    /// <summary>
    /// Writes the file's dirty pages to disk and drops its pages from the page cache, so that the
    /// memory it held is free again (a dirty page cannot be evicted before it is written back).
    /// </summary>
    public static void SyncAndEvict(SafeFileHandle file, string path)
    {
        int fd = (int)file.DangerousGetHandle();
        Errno.Check(Interop.Libc.fdatasync(fd), "fdatasync", path);
        Evict(file, path);
    }

    /// <summary>
    /// Makes what was written durable: fdatasync(2) of each file, then fsync(2) of
    /// <paramref name="dir"/>, which holds their names.
    /// </summary>
    public static void SyncAll(IEnumerable<string> files, string dir)
    {
        foreach (string path in files.Append(dir))
        {
            int fd = Interop.Libc.open(path, Interop.Libc.O_RDONLY | Interop.Libc.O_CLOEXEC, 0);
            if (fd < 0)
                throw new SyscallException("open", path, Errno.Last);
            try
            {
                int r = path == dir ? Interop.Libc.fsync(fd) : Interop.Libc.fdatasync(fd);
                Errno.Check(r, path == dir ? "fsync" : "fdatasync", path);
            }
            finally
            {
                Interop.Libc.close(fd);
            }
        }
    }

    /// <summary>
    /// Tells the kernel the file will be read from start to end (POSIX_FADV_SEQUENTIAL: larger
    /// readahead). Advice only: errors are ignored.
    /// </summary>
    public static void AdviseSequential(SafeFileHandle file) =>
        _ = Interop.Libc.posix_fadvise((int)file.DangerousGetHandle(), 0, 0, Interop.Libc.POSIX_FADV_SEQUENTIAL);

    /// <summary>Drops the file's clean pages from the page cache (POSIX_FADV_DONTNEED).</summary>
    public static void Evict(SafeFileHandle file, string path) => Evict(file, path, 0, 0);

    /// <summary>Drops a range of the file's clean pages from the page cache (length 0: to the end).</summary>
    public static void Evict(SafeFileHandle file, string path, long offset, long length)
    {
        int err = Interop.Libc.posix_fadvise((int)file.DangerousGetHandle(), offset, length, Interop.Libc.POSIX_FADV_DONTNEED);
        if (err != 0)
            throw new SyscallException("posix_fadvise(POSIX_FADV_DONTNEED)", path, err);
    }

    /// <summary>Waits up to <paramref name="timeoutMs"/> for <paramref name="fd"/> to be readable (or closed).</summary>
    public static unsafe bool WaitReadable(int fd, int timeoutMs)
    {
        var pfd = new Interop.PollFd { Fd = fd, Events = Interop.Libc.POLLIN };
        int r = Interop.Libc.poll(&pfd, 1, timeoutMs);
        if (r < 0)
        {
            if (Errno.Last == Errno.EINTR)
                return false;
            throw Errno.Error("poll", $"fd {fd}");
        }
        return r > 0;
    }

    /// <summary>Reads one byte from <paramref name="fd"/>; -1 at end of file.</summary>
    public static unsafe int ReadByte(int fd)
    {
        byte b;
        while (true)
        {
            nint n = Interop.Libc.read(fd, &b, 1);
            if (n == 1)
                return b;
            if (n == 0)
                return -1;
            if (Errno.Last != Errno.EINTR)
                return -1;
        }
    }

    /// <summary>How many of the file's pages are in the page cache (mincore(2) on a mapping of it).</summary>
    public static unsafe long ResidentPages(string path)
    {
        using var file = File.OpenHandle(path, FileMode.Open, FileAccess.Read);
        long length = RandomAccess.GetLength(file);
        if (length == 0)
            return 0;
        nint addr = Interop.Libc.mmap(0, (nuint)length, Interop.Libc.PROT_READ, Interop.Libc.MAP_SHARED, (int)file.DangerousGetHandle(), 0);
        if (addr == Interop.Libc.MAP_FAILED)
            throw Errno.Error("mmap", path);
        try
        {
            long pages = (length + Environment.SystemPageSize - 1) / Environment.SystemPageSize;
            var vec = new byte[pages];
            fixed (byte* v = vec)
            {
                if (Interop.Libc.mincore(addr, (nuint)length, v) < 0)
                    throw Errno.Error("mincore", path);
            }
            return vec.LongCount(b => (b & 1) != 0);
        }
        finally
        {
            Interop.Libc.munmap(addr, (nuint)length);
        }
    }

    /// <summary>Gives <paramref name="path"/> the group <paramref name="gid"/> (owner unchanged).</summary>
    public static void ChangeGroup(string path, int gid) =>
        Errno.Check(Interop.Libc.chown(path, -1, gid), "chown", $"{path} (group {gid})");

    /// <summary>
    /// Raises the soft limit of open files to the hard limit (a service holds a socket per client
    /// and files per target); returns the new soft limit.
    /// </summary>
    public static ulong RaiseOpenFileLimit()
    {
        if (Interop.Libc.getrlimit(Interop.Libc.RLIMIT_NOFILE, out var limit) != 0)
            return 0;
        if (limit.Current < limit.Max)
        {
            var raised = limit with { Current = limit.Max };
            if (Interop.Libc.setrlimit(Interop.Libc.RLIMIT_NOFILE, raised) == 0)
                return raised.Current;
        }
        return limit.Current;
    }

    /// <summary>The file type bits (S_IFMT) of <paramref name="path"/>, not following a symlink; null if it does not exist.</summary>
    public static unsafe int? FileType(string path)
    {
        byte* buffer = stackalloc byte[256];
        if (Interop.Libc.statx(Interop.Libc.AT_FDCWD, path, Interop.Libc.AT_SYMLINK_NOFOLLOW, Interop.Libc.STATX_TYPE, buffer) != 0)
        {
            int errno = Errno.Last;
            if (errno == Errno.ENOENT)
                return null;
            throw new SyscallException("statx", path, errno);
        }
        return *(ushort*)(buffer + 28) & S_IFMT;
    }

    public const int S_IFMT = 0xF000;
    public const int S_IFSOCK = 0xC000;

    /// <summary>chown(2) of a path to <paramref name="uid"/> and <paramref name="gid"/>.</summary>
    public static void ChangeOwner(string path, int uid, int gid) =>
        Errno.Check(Interop.Libc.chown(path, uid, gid), "chown", $"{path} ({uid}:{gid})");
}
