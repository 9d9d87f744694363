using System.Runtime.InteropServices;

namespace Memcr.Linux;

/// <summary>A failed system call: names the call, the object it acted on and the errno text.</summary>
public sealed class SyscallException : IOException
{
    public SyscallException(string operation, string target, int errno)
        : base($"{operation} on {target}: {Describe(errno)}")
    {
        Operation = operation;
        Target = target;
        Errno = errno;
    }

    public SyscallException(string operation, string target, int errno, string hint)
        : base($"{operation} on {target}: {Describe(errno)} ({hint})")
    {
        Operation = operation;
        Target = target;
        Errno = errno;
    }

    public string Operation { get; }

    public string Target { get; }

    public int Errno { get; }

    public static string Describe(int errno) =>
        Marshal.GetPInvokeErrorMessage(errno).ToLowerInvariant() + $" (errno {errno})";
}

/// <summary>Errno values we branch on. Linux numbering on every architecture we support.</summary>
public static class Errno
{
    public const int EPERM = 1;
    public const int ENOENT = 2;
    public const int ESRCH = 3;
    public const int EINTR = 4;
    public const int EIO = 5;
    public const int EAGAIN = 11;
    public const int ENOMEM = 12;
    public const int EACCES = 13;
    public const int EFAULT = 14;
    public const int EBUSY = 16;
    public const int EEXIST = 17;
    public const int EINVAL = 22;
    public const int ENOSPC = 28;
    public const int ENOTTY = 25;
    public const int EOPNOTSUPP = 95;
    public const int ESTALE = 116;

    /// <summary>Reads errno of the last P/Invoke on this thread.</summary>
    public static int Last => Marshal.GetLastPInvokeError();

    internal static SyscallException Error(string operation, string target) => new(operation, target, Last);

    internal static void Check(int result, string operation, string target)
    {
        if (result < 0)
            throw Error(operation, target);
    }
}
