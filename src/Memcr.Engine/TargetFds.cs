using Memcr.Linux;
using Memcr.Linux.Arch;
using Memcr.Linux.Kernel;
using Memcr.Linux.Memory;
using Memcr.Linux.Proc;
using Memcr.Linux.Ptrace;

namespace Memcr.Engine;

/// <summary>
/// Descriptors of a seized process that memcr makes or ends there by remote calls: the
/// userfaultfds of lazy restores and of write tracking, which must belong to the process (so that
/// they serve its memory and outlive memcr).
/// </summary>
internal static class TargetFds
{
    /// <summary>userfaultfd(2) flag: only user-mode faults are handled (what a process without CAP_SYS_PTRACE may ask for where vm.unprivileged_userfaultfd is 0).</summary>
    public const int UserModeOnly = 1;

    /// <summary>A syscall instruction in the target's code or vDSO, for remote calls.</summary>
    public static ulong SyscallInstruction(int pid, CpuArchitecture arch, RemoteMemory memory) =>
        RemoteSyscall.FindSyscallInstruction(pid, ProcFs.ReadMaps(pid, RemoteSyscall.MayHoldSyscallInstruction), arch, memory);

    private static ulong SyscallInstruction(int pid, CpuArchitecture arch)
    {
        using var memory = new RemoteMemory(pid);
        return SyscallInstruction(pid, arch, memory);
    }

    /// <summary>
    /// userfaultfd(<paramref name="flags"/>) run by the seized process, then taken with
    /// pidfd_getfd: memcr's copy and the process's descriptor. The descriptor is -1 (and the copy
    /// null) when the process's userfaultfd() refused with EPERM.
    /// </summary>
    public static (UserFaultFd? Fd, int TargetFd) MakeUserFaultFd(Tracer tracer, int flags, Log log)
    {
        var arch = CpuArchitecture.Current;
        long r;
        using (var remote = RemoteSyscall.Open(tracer, arch, SyscallInstruction(tracer.Pid, arch)))
            r = remote.Call(arch.Syscalls.Userfaultfd, (ulong)flags);
        if (r == -Errno.EPERM)
            return (null, -1);
        if (r < 0)
            throw new SyscallException("userfaultfd() in the target", $"pid {tracer.Pid}", (int)-r);
        try
        {
            return (TakeUserFaultFd(tracer.Pid, (int)r), (int)r);
        }
        catch (SyscallException)
        {
            Close(tracer, (int)r, log);
            throw;
        }
    }

    /// <summary>memcr's copy (pidfd_getfd) of the process's userfaultfd <paramref name="targetFd"/>.</summary>
    public static UserFaultFd TakeUserFaultFd(int pid, int targetFd)
    {
        using var pidfd = ProcessCalls.PidfdOpen(pid);
        return new UserFaultFd(ProcessCalls.TakeFd(pidfd, pid, targetFd), $"pid {pid}");
    }

    /// <summary>Closes fd <paramref name="fd"/> of the running process: seize, one remote close(), detach.</summary>
    public static void Close(int pid, int fd, Log log)
    {
        Tracer tracer;
        try
        {
            tracer = Tracer.Seize(pid, log.Debug);
        }
        catch (ProcessGoneException)
        {
            return;
        }
        using (tracer)
            Close(tracer, fd, log);
    }

    /// <summary>One remote close() of <paramref name="fd"/> by a thread of the seized process.</summary>
    public static void Close(Tracer tracer, int fd, Log log)
    {
        var arch = CpuArchitecture.Current;
        using var remote = RemoteSyscall.Open(tracer, arch, SyscallInstruction(tracer.Pid, arch));
        long r = remote.Call(arch.Syscalls.Close, (ulong)fd);
        if (r < 0)
            log.Error($"close of fd {fd} (its userfaultfd) in pid {tracer.Pid}: {SyscallException.Describe((int)-r)}");
    }
}
