using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Memcr.Linux.Kernel;

/// <summary>glibc's struct termios (c_cc of 32 bytes, as tcgetattr fills it).</summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct Termios
{
    public uint IFlag;
    public uint OFlag;
    public uint CFlag;
    public uint LFlag;
    public byte Line;
    public fixed byte Cc[32];
    public uint ISpeed;
    public uint OSpeed;
}

/// <summary>Terminal state: attributes, window size, session and foreground group of a tty.</summary>
public static partial class TerminalCalls
{
    private const nuint TIOCGWINSZ = 0x5413, TIOCSWINSZ = 0x5414, TIOCGPGRP = 0x540F, TIOCGSID = 0x5429, TIOCGEXCL = 0x80045440;

    public static unsafe Termios GetAttributes(SafeFileHandle fd, string what)
    {
        Termios t;
        if (tcgetattr((int)fd.DangerousGetHandle(), &t) < 0)
            throw Errno.Error("tcgetattr", what);
        return t;
    }

    public static unsafe void SetAttributes(SafeFileHandle fd, in Termios t, string what)
    {
        fixed (Termios* p = &t)
        {
            if (tcsetattr((int)fd.DangerousGetHandle(), 0, p) < 0)
                throw Errno.Error("tcsetattr", what);
        }
    }

    /// <summary>Rows, columns, x and y pixels.</summary>
    public static unsafe (ushort Rows, ushort Cols, ushort X, ushort Y) GetWindowSize(SafeFileHandle fd, string what)
    {
        ushort* ws = stackalloc ushort[4];
        if (Interop.Libc.ioctl((int)fd.DangerousGetHandle(), TIOCGWINSZ, ws) < 0)
            throw Errno.Error("ioctl(TIOCGWINSZ)", what);
        return (ws[0], ws[1], ws[2], ws[3]);
    }

    public static unsafe void SetWindowSize(SafeFileHandle fd, ushort rows, ushort cols, ushort x, ushort y, string what)
    {
        ushort* ws = stackalloc ushort[4];
        ws[0] = rows;
        ws[1] = cols;
        ws[2] = x;
        ws[3] = y;
        if (Interop.Libc.ioctl((int)fd.DangerousGetHandle(), TIOCSWINSZ, ws) < 0)
            throw Errno.Error("ioctl(TIOCSWINSZ)", what);
    }

    /// <summary>The terminal's session, or 0 when it is no session's controlling terminal.</summary>
    public static unsafe int Session(SafeFileHandle fd)
    {
        int sid;
        return Interop.Libc.ioctl((int)fd.DangerousGetHandle(), TIOCGSID, &sid) < 0 ? 0 : sid;
    }

    /// <summary>The terminal's foreground process group, or 0.</summary>
    public static unsafe int ForegroundGroup(SafeFileHandle fd)
    {
        int pgrp;
        return Interop.Libc.ioctl((int)fd.DangerousGetHandle(), TIOCGPGRP, &pgrp) < 0 ? 0 : pgrp;
    }

    public static unsafe bool Exclusive(SafeFileHandle fd)
    {
        int excl;
        return Interop.Libc.ioctl((int)fd.DangerousGetHandle(), TIOCGEXCL, &excl) == 0 && excl != 0;
    }

    [LibraryImport("libc", SetLastError = true)]
    private static unsafe partial int tcgetattr(int fd, Termios* t);

    [LibraryImport("libc", SetLastError = true)]
    private static unsafe partial int tcsetattr(int fd, int action, Termios* t);
}
