using System.Runtime.InteropServices;

namespace Memcr.IntegrationTests.Harness;

/// <summary>libc calls the tests make themselves (Memcr.Linux keeps its interop internal).</summary>
internal static partial class Syscalls
{
    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    public static partial int Kill(int pid, int signal);
}
