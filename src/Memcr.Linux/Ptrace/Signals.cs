namespace Memcr.Linux.Ptrace;

/// <summary>Linux signal numbers (x86_64 and arm64 share them) and their default actions.</summary>
public static class Signals
{
    /// <summary>Sends SIGKILL to process <paramref name="pid"/>; false if it has gone already.</summary>
    public static bool Kill(int pid) => Interop.Libc.kill(pid, SIGKILL) == 0;

    public const int SIGHUP = 1;
    public const int SIGINT = 2;
    public const int SIGQUIT = 3;
    public const int SIGTRAP = 5;
    public const int SIGKILL = 9;
    public const int SIGUSR1 = 10;
    public const int SIGUSR2 = 12;
    public const int SIGTERM = 15;
    public const int SIGCHLD = 17;
    public const int SIGCONT = 18;
    public const int SIGSTOP = 19;
    public const int SIGTSTP = 20;
    public const int SIGTTIN = 21;
    public const int SIGTTOU = 22;
    public const int SIGURG = 23;
    public const int SIGWINCH = 28;
    public const int SIGRTMIN = 34;
    public const int Max = 64;

    private static readonly string[] Names =
    [
        "0", "SIGHUP", "SIGINT", "SIGQUIT", "SIGILL", "SIGTRAP", "SIGABRT", "SIGBUS", "SIGFPE", "SIGKILL",
        "SIGUSR1", "SIGSEGV", "SIGUSR2", "SIGPIPE", "SIGALRM", "SIGTERM", "SIGSTKFLT", "SIGCHLD", "SIGCONT",
        "SIGSTOP", "SIGTSTP", "SIGTTIN", "SIGTTOU", "SIGURG", "SIGXCPU", "SIGXFSZ", "SIGVTALRM", "SIGPROF",
        "SIGWINCH", "SIGIO", "SIGPWR", "SIGSYS",
    ];

    public static string Name(int sig) =>
        sig >= 0 && sig < Names.Length ? Names[sig]
        : sig >= SIGRTMIN && sig <= Max ? (sig == SIGRTMIN ? "SIGRTMIN" : $"SIGRTMIN+{sig - SIGRTMIN}")
        : $"signal {sig}";

    public static ulong Bit(int sig) => 1UL << (sig - 1);

    /// <summary>Signals whose default action ends the process (signal(7)): Term and Core.</summary>
    public static bool TerminatesByDefault(int sig) =>
        sig switch
        {
            SIGCHLD or SIGCONT or SIGURG or SIGWINCH => false,
            SIGSTOP or SIGTSTP or SIGTTIN or SIGTTOU => false,
            _ => sig >= 1 && sig <= Max && sig != 32 && sig != 33,
        };

    public static bool IsStopSignal(int sig) => sig is SIGSTOP or SIGTSTP or SIGTTIN or SIGTTOU;
}
