namespace Memcr.Linux.Proc;

/// <summary>Why a pid cannot be frozen (checkpointed or dumped), and whether a directory can take images: checked before touching anything.</summary>
public static class TargetCheck
{
    /// <summary>The reason <paramref name="pid"/> must not or cannot be frozen, or null when it can be.</summary>
    public static string? Refusal(int pid, out ProcStatus? status)
    {
        status = null;
        if (pid <= 0)
            return $"invalid pid {pid}: a pid must be > 0";
        if (pid == Environment.ProcessId)
            return $"pid {pid} is memcr itself";
        ulong flags;
        try
        {
            status = ProcFs.ReadStatus(pid);
            flags = ProcFs.ReadStatFlags(pid);
        }
        catch (ProcessGoneException)
        {
            return $"pid {pid}: no such process";
        }
        if (status.KernelThread || (flags & ProcFs.PF_KTHREAD) != 0)
            return $"pid {pid} ({status.Name}) is a kernel thread: it has no user memory to save";
        if (status.State is 'Z' or 'X')
            return $"pid {pid} ({status.Name}) is a zombie: it has exited and has no memory left";
        if (status.Tgid != pid)
            return $"pid {pid} is a thread of process {status.Tgid}; give the process id";
        if (status.TracerPid != 0)
            return $"pid {pid} ({status.Name}) is already traced by pid {status.TracerPid} (a debugger, strace or another memcr): it cannot be seized";
        return null;
    }

    /// <summary>Why images cannot be written to <paramref name="dir"/>, or null.</summary>
    public static string? DirRefusal(string dir)
    {
        if (!Directory.Exists(dir))
            return File.Exists(dir) ? $"dump dir {dir} is not a directory" : $"dump dir {dir} does not exist";
        // Asked of the kernel (a read-only mount answers EROFS), not by creating a file: a write
        // would touch the file system on every checkpoint, and creating the image checks it again.
        if (Interop.Libc.faccessat(Interop.Libc.AT_FDCWD, dir, Interop.Libc.W_OK | Interop.Libc.X_OK, Interop.Libc.AT_EACCESS) != 0)
            return $"dump dir {dir} is not writable: {SyscallException.Describe(Errno.Last)}";
        return null;
    }
}
