using System.Runtime.InteropServices;

namespace Memcr.Linux;

internal static partial class Interop
{
    [StructLayout(LayoutKind.Sequential)]
    internal struct PollFd
    {
        public int Fd;
        public short Events;
        public short REvents;
    }

    internal static partial class Libc
    {
        internal const short POLLIN = 1;

        [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
        internal static partial int kill(int pid, int sig);

        [LibraryImport("libc", EntryPoint = "tgkill", SetLastError = true)]
        internal static partial int tgkill(int tgid, int tid, int sig);

        [LibraryImport("libc", EntryPoint = "poll", SetLastError = true)]
        internal static unsafe partial int poll(PollFd* fds, nuint nfds, int timeout);

        [LibraryImport("libc", EntryPoint = "gettid")]
        internal static partial int gettid();

        [LibraryImport("libc", EntryPoint = "getpagesize")]
        internal static partial int getpagesize();
    }
}
