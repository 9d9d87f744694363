namespace Memcr.Linux.Ptrace;

/// <summary>A wait4 status word decoded as the W* macros of sys/wait.h do.</summary>
public readonly record struct WaitStatus(int Raw)
{
    public bool Exited => (Raw & 0x7f) == 0;

    public int ExitCode => (Raw >> 8) & 0xff;

    public bool Signaled => (Raw & 0x7f) != 0 && (Raw & 0x7f) != 0x7f;

    public int TermSignal => Raw & 0x7f;

    public bool Stopped => (Raw & 0xff) == 0x7f;

    public int StopSignal => (Raw >> 8) & 0xff;

    /// <summary>The PTRACE_EVENT_* of an event stop, 0 otherwise.</summary>
    public int Event => (Raw >> 16) & 0xff;

    public bool Gone => Exited || Signaled;

    public override string ToString() =>
        Exited ? $"exited with {ExitCode}"
        : Signaled ? $"killed by {Signals.Name(TermSignal)}"
        : Stopped ? $"stopped ({Signals.Name(StopSignal)}, event {Event})"
        : $"status 0x{Raw:x}";
}
