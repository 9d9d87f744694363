using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Memcr.Linux.Kernel;

/// <summary>inotify instances and the file handles their watches are reported by (open_by_handle_at).</summary>
public static class InotifyCalls
{
    // _IOW('I', 0, __s32): the wd the next inotify_add_watch gets (Linux 4.13).
    private const nuint InotifyIocSetNextWd = 0x40044900;
    private const int OPath = 0x200000;

    /// <summary>A new inotify instance (close-on-exec added to <paramref name="flags"/>).</summary>
    public static SafeFileHandle Init(int flags)
    {
        int fd = Interop.Libc.inotify_init1(flags | Interop.Libc.O_CLOEXEC);
        if (fd < 0)
            throw Errno.Error("inotify_init1", $"flags 0x{flags:x}");
        return new SafeFileHandle(fd, true);
    }

    /// <summary>Watches <paramref name="path"/> with <paramref name="mask"/> and makes sure the watch gets descriptor <paramref name="wd"/>.</summary>
    public static unsafe void AddWatch(SafeFileHandle inotify, string path, uint mask, int wd, string what)
    {
        int fd = (int)inotify.DangerousGetHandle();
        // The argument is the number itself, not a pointer to it.
        if (Interop.Libc.ioctl(fd, InotifyIocSetNextWd, (void*)wd) < 0)
            throw Errno.Error("ioctl(INOTIFY_IOC_SETNEXTWD)", what);
        int got = Interop.Libc.inotify_add_watch(fd, path, mask);
        if (got < 0)
            throw Errno.Error("inotify_add_watch", $"{what} ({path})");
        if (got != wd)
            throw new SyscallException("inotify_add_watch", $"{what} ({path}): the watch got descriptor {got}, not {wd}", Errno.EEXIST);
    }

    /// <summary>
    /// Opens (O_PATH) the file that a handle from /proc/PID/fdinfo names, on the file system mounted
    /// at <paramref name="mountPoint"/>; null when it is not there (ESTALE, ENOENT).
    /// </summary>
    public static unsafe SafeFileHandle? OpenByHandle(string mountPoint, uint type, ReadOnlySpan<byte> handle)
    {
        // Not O_PATH: open_by_handle_at does not take an O_PATH descriptor for the mount (EBADF).
        using var mount = FileCalls.Open(mountPoint, Interop.Libc.O_RDONLY | Interop.Libc.O_CLOEXEC);
        // struct file_handle: handle_bytes, handle_type, f_handle[].
        var buffer = new byte[8 + handle.Length];
        MemoryMarshal.Write(buffer, (uint)handle.Length);
        MemoryMarshal.Write(buffer.AsSpan(4), type);
        handle.CopyTo(buffer.AsSpan(8));
        fixed (byte* h = buffer)
        {
            int fd = Interop.Libc.open_by_handle_at((int)mount.DangerousGetHandle(), h, OPath | Interop.Libc.O_CLOEXEC);
            if (fd >= 0)
                return new SafeFileHandle(fd, true);
            int errno = Errno.Last;
            if (errno is Errno.ESTALE or Errno.ENOENT)
                return null;
            throw new SyscallException("open_by_handle_at", $"a file handle on {mountPoint}", errno);
        }
    }
}
