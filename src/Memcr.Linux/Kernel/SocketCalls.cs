using System.Runtime.InteropServices;

namespace Memcr.Linux.Kernel;

/// <summary>Socket options of a socket descriptor, read and set without .NET's Socket (which would change its state).</summary>
public static partial class SocketCalls
{
    public const int SolSocket = 1;
    public const int SoReuseaddr = 2, SoSndbuf = 7, SoRcvbuf = 8, SoPasscred = 16, SoRcvtimeo = 20, SoSndtimeo = 21, SoReuseport = 15;

    public static unsafe void SetInt(SafeHandle fd, int level, int name, int value, string what)
    {
        if (setsockopt((int)fd.DangerousGetHandle(), level, name, &value, 4) < 0)
            throw Errno.Error("setsockopt", $"{what} (option {level}/{name})");
    }

    /// <summary>A timeout option (struct timeval): seconds and microseconds.</summary>
    public static unsafe (long Sec, long Usec) GetTime(SafeHandle fd, int name)
    {
        long* tv = stackalloc long[2];
        uint len = 16;
        if (getsockopt((int)fd.DangerousGetHandle(), SolSocket, name, tv, &len) < 0)
            throw Errno.Error("getsockopt", $"option {name}");
        return (tv[0], tv[1]);
    }

    public static unsafe void SetTime(SafeHandle fd, int name, long sec, long usec, string what)
    {
        long* tv = stackalloc long[2];
        tv[0] = sec;
        tv[1] = usec;
        if (setsockopt((int)fd.DangerousGetHandle(), SolSocket, name, tv, 16) < 0)
            throw Errno.Error("setsockopt", $"{what} (option {name})");
    }

    [LibraryImport("libc", SetLastError = true)]
    private static unsafe partial int getsockopt(int fd, int level, int name, void* value, uint* len);

    [LibraryImport("libc", SetLastError = true)]
    private static unsafe partial int setsockopt(int fd, int level, int name, void* value, uint len);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int socket(int domain, int type, int protocol);

    [LibraryImport("libc", SetLastError = true)]
    private static unsafe partial int bind(int fd, byte* addr, uint len);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int listen(int fd, int backlog);
}
