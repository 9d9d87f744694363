using System.Runtime.InteropServices;

namespace Memcr.IntegrationTests.Harness;

internal static partial class Syscalls
{
    public const int SIGINT = 2;
    public const int SIGKILL = 9;
    public const int SIGUSR2 = 12;
    public const int SIGTERM = 15;
    public const int SIGRTMIN = 34;

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    public static partial int Kill(int pid, int signal);
}
