using System.Runtime.InteropServices;

namespace Memcr.Linux;

internal static partial class Interop
{
    internal static partial class Libc
    {
        internal const int PTRACE_CONT = 7;
        internal const int PTRACE_KILL = 8;
        internal const int PTRACE_DETACH = 17;
        internal const int PTRACE_SYSCALL = 24;
        internal const int PTRACE_SETOPTIONS = 0x4200;
        internal const int PTRACE_GETEVENTMSG = 0x4201;
        internal const int PTRACE_GETSIGINFO = 0x4202;
        internal const int PTRACE_GETREGSET = 0x4204;
        internal const int PTRACE_SETREGSET = 0x4205;
        internal const int PTRACE_SEIZE = 0x4206;
        internal const int PTRACE_INTERRUPT = 0x4207;
        internal const int PTRACE_GETSIGMASK = 0x420a;
        internal const int PTRACE_SETSIGMASK = 0x420b;
        internal const int PTRACE_PEEKSIGINFO = 0x4209;
        internal const int PTRACE_GET_RSEQ_CONFIGURATION = 0x420f;
        internal const int PTRACE_GET_THREAD_AREA = 25;
        internal const int PTRACE_SET_THREAD_AREA = 26;

        internal const int PTRACE_O_TRACESYSGOOD = 1;
        internal const int PTRACE_O_TRACEFORK = 2;
        internal const int PTRACE_O_TRACECLONE = 8;
        internal const int PTRACE_O_EXITKILL = 0x100000;

        internal const int PTRACE_PEEKSIGINFO_SHARED = 1;

        internal const int PTRACE_EVENT_FORK = 1;
        internal const int PTRACE_EVENT_CLONE = 3;
        internal const int PTRACE_EVENT_EXEC = 4;
        internal const int PTRACE_EVENT_STOP = 128;

        internal const int NT_PRSTATUS = 1;

        // glibc's ptrace is variadic, but on x86_64 and aarch64 Linux integer varargs travel in
        // the same registers as fixed arguments, so a four-argument import is exact.
        [LibraryImport("libc", EntryPoint = "ptrace", SetLastError = true)]
        internal static partial long ptrace(long request, int pid, nint addr, nint data);

        [LibraryImport("libc", EntryPoint = "wait4", SetLastError = true)]
        internal static unsafe partial int wait4(int pid, int* status, int options, nint rusage);

        internal const int WNOHANG = 1;
        internal const int __WALL = 0x40000000;
    }
}
