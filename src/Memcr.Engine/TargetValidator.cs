using Memcr.Linux.Proc;

namespace Memcr.Engine;

/// <summary>Refuses targets memcr must not or cannot checkpoint, before touching them.</summary>
public static class TargetValidator
{
    public static ProcStatus Validate(int pid) =>
        TargetCheck.Refusal(pid, out var status) is { } why ? throw new CheckpointException(why) : status!;

    /// <summary>Checks that the dump directory exists and is a directory we can write to.</summary>
    public static void ValidateDumpDir(string dir)
    {
        if (TargetCheck.DirRefusal(dir) is { } why)
            throw new CheckpointException(why);
    }
}
