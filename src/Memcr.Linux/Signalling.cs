namespace Memcr.Linux;

/// <summary>Sends signals to processes.</summary>
public static class Signalling
{
    /// <summary>kill(2); returns false if the process does not exist.</summary>
    public static bool Send(int pid, int signal)
    {
        if (Interop.Libc.kill(pid, signal) == 0)
            return true;
        int errno = Errno.Last;
        if (errno == Errno.ESRCH)
            return false;
        throw new SyscallException($"kill(signal {signal})", $"pid {pid}", errno);
    }
}
