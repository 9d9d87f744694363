namespace Memcr.Engine;

/// <summary>A checkpoint or restore that could not be done; the message says why and what became of the target.</summary>
public sealed class CheckpointException : Exception
{
    public CheckpointException(string message) : base(message)
    {
    }

    public CheckpointException(string message, Exception inner) : base(message, inner)
    {
    }
}

/// <summary>The target ended while it was checkpointed.</summary>
public sealed class TargetTerminatedException(int pid, string how)
    : Exception($"target pid {pid} {how} while checkpointed")
{
    public int Pid { get; } = pid;
}
