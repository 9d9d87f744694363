using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Memcr.Linux.Memory;

/// <summary>What a userfaultfd reports (struct uffd_msg, 32 bytes).</summary>
public enum UserFaultEvent : byte
{
    PageFault = 0x12,
    Fork = 0x13,
    Remap = 0x14,
    Remove = 0x15,
    Unmap = 0x16,
}

/// <summary>
/// One message read from a userfaultfd. For <see cref="UserFaultEvent.PageFault"/> A is the
/// address; Fork: A is the new descriptor (now in this process); Remap: A from, B to, C length;
/// Remove and Unmap: A start, B end.
/// </summary>
[StructLayout(LayoutKind.Sequential, Size = 32)]
public struct UserFaultMessage
{
    public UserFaultEvent Event;
    private readonly byte _reserved1;
    private readonly ushort _reserved2;
    private readonly uint _reserved3;
    public ulong A;
    public ulong B;
    public ulong C;

    /// <summary>The faulting address of a page fault (the flags word comes first).</summary>
    public readonly ulong FaultAddress => B;
}

/// <summary>
/// A userfaultfd (another process's, taken with pidfd_getfd, or a new one of a fork): its ioctls act
/// on the memory of the process that created it, whoever calls them.
/// </summary>
public sealed class UserFaultFd(SafeFileHandle handle, string owner) : IDisposable
{
    public const ulong FeatureEventFork = 1 << 1;
    public const ulong FeatureEventRemap = 1 << 2;
    public const ulong FeatureEventRemove = 1 << 3;
    public const ulong FeatureEventUnmap = 1 << 6;

    /// <summary>Writes to write-protected pages are let through by the kernel at once, only noted in the page table (PAGEMAP_SCAN's PAGE_IS_WRITTEN); Linux 6.7+.</summary>
    public const ulong FeatureWriteProtectAsync = 1 << 15;

    /// <summary>userfaultfd(2) flags: the descriptor is made non-blocking and close-on-exec.</summary>
    public const int CreateFlags = 0x800 | 0x80000; // O_NONBLOCK | O_CLOEXEC

    private const ulong UffdApi = 0xAA;
    private const nuint IocApi = 0xC018AA3F;
    private const nuint IocRegister = 0xC020AA00;
    private const nuint IocUnregister = 0x8010AA01;
    private const nuint IocWake = 0x8010AA02;
    private const nuint IocCopy = 0xC028AA03;
    private const nuint IocZeroPage = 0xC020AA04;
    private const nuint IocWriteProtect = 0xC018AA06;
    private const ulong RegisterModeMissing = 1;
    private const ulong RegisterModeWriteProtect = 2;
    private const ulong WriteProtectModeWp = 1;
    private const long CopyModeWp = 2;

    public SafeFileHandle Handle { get; } = handle;

    /// <summary>Whose memory it serves, for messages ("pid 1234").</summary>
    public string Owner { get; } = owner;

    private int Fd => (int)Handle.DangerousGetHandle();

    /// <summary>userfaultfd(<paramref name="flags"/>) in this process (to ask the kernel what it offers, for one).</summary>
    public static UserFaultFd Create(int flags, string owner)
    {
        long fd = Interop.Libc.syscall(Arch.CpuArchitecture.Current.Syscalls.Userfaultfd, flags, 0, 0, 0, 0);
        if (fd < 0)
            throw Errno.Error("userfaultfd", owner);
        return new UserFaultFd(new SafeFileHandle((nint)fd, ownsHandle: true), owner);
    }

    /// <summary>UFFDIO_API: enables <paramref name="features"/>; returns what the kernel offers.</summary>
    public unsafe ulong Enable(ulong features)
    {
        ulong* api = stackalloc ulong[3] { UffdApi, features, 0 };
        if (Interop.Libc.ioctl(Fd, IocApi, api) < 0)
            throw Errno.Error($"ioctl(UFFDIO_API, features 0x{features:x})", $"the userfaultfd of {Owner}");
        return api[1];
    }

    /// <summary>UFFDIO_REGISTER in missing mode: faults on absent pages of [start, end) come here.</summary>
    public unsafe void RegisterMissing(ulong start, ulong end)
    {
        ulong* reg = stackalloc ulong[4] { start, end - start, RegisterModeMissing, 0 };
        if (Interop.Libc.ioctl(Fd, IocRegister, reg) < 0)
            throw Errno.Error("ioctl(UFFDIO_REGISTER)", $"{Owner} [{start:x}-{end:x}]");
    }

    /// <summary>UFFDIO_REGISTER in missing and write-protect modes: <see cref="RegisterMissing"/>, with writes tracked as <see cref="RegisterWriteProtect"/> does.</summary>
    public unsafe void RegisterMissingWriteProtect(ulong start, ulong end)
    {
        ulong* reg = stackalloc ulong[4] { start, end - start, RegisterModeMissing | RegisterModeWriteProtect, 0 };
        if (Interop.Libc.ioctl(Fd, IocRegister, reg) < 0)
            throw Errno.Error("ioctl(UFFDIO_REGISTER, missing and write-protect)", $"{Owner} [{start:x}-{end:x}]");
    }

    /// <summary>UFFDIO_REGISTER in write-protect mode: writes to [start, end) can be tracked (<see cref="WriteProtect"/>).</summary>
    public unsafe void RegisterWriteProtect(ulong start, ulong end)
    {
        ulong* reg = stackalloc ulong[4] { start, end - start, RegisterModeWriteProtect, 0 };
        if (Interop.Libc.ioctl(Fd, IocRegister, reg) < 0)
            throw Errno.Error("ioctl(UFFDIO_REGISTER, write-protect)", $"{Owner} [{start:x}-{end:x}]");
    }

    /// <summary>UFFDIO_WRITEPROTECT of [start, end): its pages count as not written until written again.</summary>
    public unsafe void WriteProtect(ulong start, ulong end)
    {
        ulong* wp = stackalloc ulong[3] { start, end - start, WriteProtectModeWp };
        if (Interop.Libc.ioctl(Fd, IocWriteProtect, wp) < 0)
            throw Errno.Error("ioctl(UFFDIO_WRITEPROTECT)", $"{Owner} [{start:x}-{end:x}]");
    }

    /// <summary>UFFDIO_UNREGISTER; returns the errno, 0 when done.</summary>
    public unsafe int Unregister(ulong start, ulong end)
    {
        ulong* range = stackalloc ulong[2] { start, end - start };
        return Interop.Libc.ioctl(Fd, IocUnregister, range) < 0 ? Errno.Last : 0;
    }

    /// <summary>UFFDIO_WAKE: threads waiting on a fault in [start, end) try again (and fault anew if the page is still missing); returns the errno, 0 when done.</summary>
    public unsafe int Wake(ulong start, ulong end)
    {
        ulong* range = stackalloc ulong[2] { start, end - start };
        return Interop.Libc.ioctl(Fd, IocWake, range) < 0 ? Errno.Last : 0;
    }

    /// <summary>
    /// UFFDIO_COPY of <paramref name="length"/> bytes from this process to <paramref name="dst"/>,
    /// waking who waits there; with <paramref name="writeProtect"/> the pages come in
    /// write-protected (a range registered in write-protect mode too). Returns the bytes copied,
    /// or -errno when none was (EEXIST: the first page is there already; EAGAIN: the mappings are
    /// changing, read the events first; ENOENT or ESRCH: the range or the process is gone).
    /// </summary>
    public unsafe long Copy(ulong dst, nint src, ulong length, bool writeProtect = false)
    {
        long* copy = stackalloc long[5] { (long)dst, src, (long)length, writeProtect ? CopyModeWp : 0, 0 };
        int r = Interop.Libc.ioctl(Fd, IocCopy, copy);
        if (copy[4] > 0)
            return copy[4];
        return r < 0 ? -Errno.Last : copy[4];
    }

    /// <summary>UFFDIO_ZEROPAGE of one range; returns 0 or -errno (EEXIST: the page is there already).</summary>
    public unsafe int ZeroPage(ulong start, ulong length)
    {
        long* zero = stackalloc long[4] { (long)start, (long)length, 0, 0 };
        return Interop.Libc.ioctl(Fd, IocZeroPage, zero) < 0 ? -Errno.Last : 0;
    }

    /// <summary>Reads what is queued (without blocking); returns how many messages.</summary>
    public unsafe int Read(Span<UserFaultMessage> into)
    {
        fixed (UserFaultMessage* p = into)
        {
            nint n = Interop.Libc.read(Fd, p, (nuint)(into.Length * sizeof(UserFaultMessage)));
            if (n >= 0)
                return (int)(n / sizeof(UserFaultMessage));
            int errno = Errno.Last;
            if (errno == Errno.EAGAIN)
                return 0;
            throw new SyscallException("read", $"the userfaultfd of {Owner}", errno);
        }
    }

    /// <summary>Waits until one of <paramref name="fds"/> has messages, or <paramref name="timeoutMs"/> passes (-1: no limit).</summary>
    public static unsafe void Poll(IReadOnlyList<UserFaultFd> fds, int timeoutMs)
    {
        var polls = stackalloc Interop.PollFd[fds.Count];
        for (int i = 0; i < fds.Count; i++)
            polls[i] = new Interop.PollFd { Fd = fds[i].Fd, Events = Interop.Libc.POLLIN };
        if (Interop.Libc.poll(polls, (nuint)fds.Count, timeoutMs) < 0 && Errno.Last != Errno.EINTR)
            throw Errno.Error("poll", "userfaultfds");
    }

    public void Dispose() => Handle.Dispose();
}
