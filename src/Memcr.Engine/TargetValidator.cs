using Memcr.Linux.Proc;

namespace Memcr.Engine;

/// <summary>Refuses targets memcr must not or cannot checkpoint, before touching them.</summary>
public static class TargetValidator
{
    public static ProcStatus Validate(int pid)
    {
        if (pid <= 0)
            throw new CheckpointException($"invalid pid {pid}: a pid must be > 0");
        if (pid == Environment.ProcessId)
            throw new CheckpointException($"pid {pid} is memcr itself");
        ProcStatus status;
        ulong flags;
        try
        {
            status = ProcFs.ReadStatus(pid);
            flags = ProcFs.ReadStatFlags(pid);
        }
        catch (ProcessGoneException)
        {
            throw new CheckpointException($"pid {pid}: no such process");
        }
        if (status.KernelThread || (flags & ProcFs.PF_KTHREAD) != 0)
            throw new CheckpointException($"pid {pid} ({status.Name}) is a kernel thread: it has no user memory to checkpoint");
        if (status.State is 'Z' or 'X')
            throw new CheckpointException($"pid {pid} ({status.Name}) is a zombie: it has exited and has no memory left");
        if (status.Tgid != pid)
            throw new CheckpointException($"pid {pid} is a thread of process {status.Tgid}; give the process id");
        if (status.TracerPid != 0)
        {
            throw new CheckpointException(
                $"pid {pid} ({status.Name}) is already traced by pid {status.TracerPid} (a debugger, strace or another memcr): it cannot be seized");
        }
        return status;
    }

    /// <summary>Checks that the dump directory exists and is a directory we can write to.</summary>
    public static void ValidateDumpDir(string dir)
    {
        if (!Directory.Exists(dir))
        {
            throw new CheckpointException(File.Exists(dir)
                ? $"dump dir {dir} is not a directory"
                : $"dump dir {dir} does not exist");
        }
        // Unique per call: a service checks the directory for many checkpoints at once.
        string probe = Path.Combine(dir, $".memcr-probe-{Environment.ProcessId}-{Guid.NewGuid():N}");
        try
        {
            using (File.Create(probe, 1, FileOptions.DeleteOnClose))
            {
            }
        }
        catch (Exception e) when (e is UnauthorizedAccessException or IOException)
        {
            throw new CheckpointException($"dump dir {dir} is not writable: {e.Message}");
        }
    }
}
