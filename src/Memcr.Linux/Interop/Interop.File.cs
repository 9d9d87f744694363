using System.Runtime.InteropServices;

namespace Memcr.Linux;

internal static partial class Interop
{
    internal static partial class Libc
    {
        internal const int O_RDONLY = 0;
        internal const int O_WRONLY = 1;
        internal const int O_RDWR = 2;
        internal const int O_CREAT = 0x40;
        internal const int O_EXCL = 0x80;
        internal const int O_TRUNC = 0x200;
        internal const int O_CLOEXEC = 0x80000;

        // O_DIRECT differs between architectures (asm-generic: 0x4000 on x86; 0x10000 on arm64).
        internal static readonly int O_DIRECT =
            RuntimeInformation.ProcessArchitecture == Architecture.Arm64 ? 0x10000 : 0x4000;

        internal const int POSIX_FADV_SEQUENTIAL = 2;
        internal const int POSIX_FADV_DONTNEED = 4;
        internal const int SYNC_FILE_RANGE_WRITE = 2;

        [LibraryImport("libc", EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
        internal static partial int open(string path, int flags, int mode);

        internal const int AT_EACCESS = 0x200;
        internal const int X_OK = 1;
        internal const int W_OK = 2;

        [LibraryImport("libc", EntryPoint = "faccessat", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
        internal static partial int faccessat(int dirfd, string path, int mode, int flags);

        [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
        internal static partial int close(int fd);

        [LibraryImport("libc", EntryPoint = "pread", SetLastError = true)]
        internal static unsafe partial nint pread(int fd, void* buf, nuint count, long offset);

        [LibraryImport("libc", EntryPoint = "pwrite", SetLastError = true)]
        internal static unsafe partial nint pwrite(int fd, void* buf, nuint count, long offset);

        [LibraryImport("libc", EntryPoint = "pwritev", SetLastError = true)]
        internal static unsafe partial nint pwritev(int fd, IoVec* iov, int iovcnt, long offset);

        [LibraryImport("libc", EntryPoint = "fsync", SetLastError = true)]
        internal static partial int fsync(int fd);

        [LibraryImport("libc", EntryPoint = "fdatasync", SetLastError = true)]
        internal static partial int fdatasync(int fd);

        [LibraryImport("libc", EntryPoint = "fallocate", SetLastError = true)]
        internal static partial int fallocate(int fd, int mode, long offset, long len);

        [LibraryImport("libc", EntryPoint = "ftruncate", SetLastError = true)]
        internal static partial int ftruncate(int fd, long length);

        // Returns the error number itself rather than setting errno (posix_fadvise(3)).
        [LibraryImport("libc", EntryPoint = "posix_fadvise")]
        internal static partial int posix_fadvise(int fd, long offset, long len, int advice);

        [LibraryImport("libc", EntryPoint = "sync_file_range", SetLastError = true)]
        internal static partial int sync_file_range(int fd, long offset, long nbytes, uint flags);

        [LibraryImport("libc", EntryPoint = "inotify_init1", SetLastError = true)]
        internal static partial int inotify_init1(int flags);

        [LibraryImport("libc", EntryPoint = "inotify_add_watch", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
        internal static partial int inotify_add_watch(int fd, string path, uint mask);

        [LibraryImport("libc", EntryPoint = "open_by_handle_at", SetLastError = true)]
        internal static unsafe partial int open_by_handle_at(int mountFd, byte* handle, int flags);

        [LibraryImport("libc", EntryPoint = "ioctl", SetLastError = true)]
        internal static unsafe partial int ioctl(int fd, nuint request, void* arg);
    }
}

internal static partial class Interop
{
    internal static partial class Libc
    {
        [LibraryImport("libc", EntryPoint = "read", SetLastError = true)]
        internal static unsafe partial nint read(int fd, void* buf, nuint count);
    }
}
