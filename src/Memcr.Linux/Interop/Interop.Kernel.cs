using System.Runtime.InteropServices;

namespace Memcr.Linux;

internal static partial class Interop
{
    internal static partial class Libc
    {
        // glibc's syscall() is variadic; integer arguments travel in the same registers as fixed ones.
        [LibraryImport("libc", EntryPoint = "syscall", SetLastError = true)]
        internal static partial long syscall(long nr, long a1, long a2, long a3, long a4, long a5);

        [LibraryImport("libc", EntryPoint = "sched_getaffinity", SetLastError = true)]
        internal static unsafe partial int sched_getaffinity(int pid, nuint size, ulong* mask);

        [LibraryImport("libc", EntryPoint = "sched_setaffinity", SetLastError = true)]
        internal static unsafe partial int sched_setaffinity(int pid, nuint size, ulong* mask);

        [LibraryImport("libc", EntryPoint = "pidfd_open", SetLastError = true)]
        internal static partial int pidfd_open(int pid, uint flags);

        [LibraryImport("libc", EntryPoint = "pidfd_getfd", SetLastError = true)]
        internal static partial int pidfd_getfd(int pidfd, int targetfd, uint flags);

        [LibraryImport("libc", EntryPoint = "pipe2", SetLastError = true)]
        internal static unsafe partial int pipe2(int* fds, int flags);

        [LibraryImport("libc", EntryPoint = "tee", SetLastError = true)]
        internal static partial nint tee(int fdIn, int fdOut, nuint len, uint flags);

        [LibraryImport("libc", EntryPoint = "fcntl", SetLastError = true)]
        internal static partial int fcntl(int fd, int cmd, long arg);

        [LibraryImport("libc", EntryPoint = "prlimit", SetLastError = true)]
        internal static unsafe partial int prlimit(int pid, int resource, RLimit* newLimit, RLimit* oldLimit);

        [LibraryImport("libc", EntryPoint = "lseek", SetLastError = true)]
        internal static partial long lseek(int fd, long offset, int whence);

        [LibraryImport("libc", EntryPoint = "write", SetLastError = true)]
        internal static unsafe partial nint write(int fd, void* buf, nuint count);

        [LibraryImport("libc", EntryPoint = "posix_spawn", SetLastError = true)]
        internal static unsafe partial int posix_spawn(int* pid, byte* path, nint fileActions, nint attr, byte** argv, byte** envp);

        [LibraryImport("libc", EntryPoint = "pause", SetLastError = true)]
        internal static partial int pause();

        [LibraryImport("libc", EntryPoint = "prctl", SetLastError = true)]
        internal static partial int prctl(int option, ulong arg2, ulong arg3, ulong arg4, ulong arg5);

        [LibraryImport("libc", EntryPoint = "getsid", SetLastError = true)]
        internal static partial int getsid(int pid);

        [LibraryImport("libc", EntryPoint = "getpgid", SetLastError = true)]
        internal static partial int getpgid(int pid);

        [LibraryImport("libc", EntryPoint = "tcsetpgrp", SetLastError = true)]
        internal static partial int tcsetpgrp(int fd, int pgrp);

        [LibraryImport("libc", EntryPoint = "isatty")]
        internal static partial int isatty(int fd);

        [LibraryImport("libc", EntryPoint = "eventfd", SetLastError = true)]
        internal static partial int eventfd(uint initval, int flags);

        [LibraryImport("libc", EntryPoint = "dup", SetLastError = true)]
        internal static partial int dup(int fd);

        [LibraryImport("libc", EntryPoint = "waitpid", SetLastError = true)]
        internal static unsafe partial int waitpid(int pid, int* status, int options);

        [LibraryImport("libc", EntryPoint = "clock_gettime", SetLastError = true)]
        internal static unsafe partial int clock_gettime(int clock, long* ts);

        [LibraryImport("libc", EntryPoint = "signalfd", SetLastError = true)]
        internal static unsafe partial int signalfd(int fd, ulong* mask, int flags);

        [LibraryImport("libc", EntryPoint = "timerfd_create", SetLastError = true)]
        internal static partial int timerfd_create(int clock, int flags);

        [LibraryImport("libc", EntryPoint = "timerfd_settime", SetLastError = true)]
        internal static unsafe partial int timerfd_settime(int fd, int flags, long* newValue, long* oldValue);

        [LibraryImport("libc", EntryPoint = "epoll_create1", SetLastError = true)]
        internal static partial int epoll_create1(int flags);

        [LibraryImport("libc", EntryPoint = "memfd_create", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
        internal static partial int memfd_create(string name, uint flags);

        [LibraryImport("libc", EntryPoint = "unlink", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
        internal static partial int unlink(string path);

        internal const int F_ADD_SEALS = 1033;
        internal const int F_GET_SEALS = 1034;
        internal const int SEEK_DATA = 3;
        internal const int SEEK_HOLE = 4;
        internal const int F_SETFL = 4;
        internal const int F_GETPIPE_SZ = 1032;
        internal const int F_SETPIPE_SZ = 1031;
        internal const int F_GETFL = 3;
        internal const int FIONREAD = 0x541B;
        internal const uint SPLICE_F_NONBLOCK = 2;
        internal const int O_NONBLOCK = 0x800;
    }
}
