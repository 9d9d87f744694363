using System.Runtime.InteropServices;

namespace Memcr.Linux;

internal static partial class Interop
{
    [StructLayout(LayoutKind.Sequential)]
    internal struct IoVec
    {
        public nint Base;
        public nuint Length;
    }

    internal static partial class Libc
    {
        [LibraryImport("libc", EntryPoint = "process_vm_readv", SetLastError = true)]
        internal static unsafe partial nint process_vm_readv(int pid, IoVec* local, nuint liovcnt, IoVec* remote, nuint riovcnt, nuint flags);

        [LibraryImport("libc", EntryPoint = "process_vm_writev", SetLastError = true)]
        internal static unsafe partial nint process_vm_writev(int pid, IoVec* local, nuint liovcnt, IoVec* remote, nuint riovcnt, nuint flags);

        [LibraryImport("libc", EntryPoint = "mmap", SetLastError = true)]
        internal static partial nint mmap(nint addr, nuint length, int prot, int flags, int fd, long offset);

        [LibraryImport("libc", EntryPoint = "munmap", SetLastError = true)]
        internal static partial int munmap(nint addr, nuint length);

        /// <summary>glibc: gives the free memory of every malloc arena back to the kernel.</summary>
        [LibraryImport("libc", EntryPoint = "malloc_trim")]
        internal static partial int malloc_trim(nuint pad);

        [LibraryImport("libc", EntryPoint = "madvise", SetLastError = true)]
        internal static partial int madvise(nint addr, nuint length, int advice);

        [LibraryImport("libc", EntryPoint = "mincore", SetLastError = true)]
        internal static unsafe partial int mincore(nint addr, nuint length, byte* vec);

        internal const int PROT_READ = 1;
        internal const int PROT_WRITE = 2;
        internal const int MAP_SHARED = 1;
        internal const int MAP_PRIVATE = 2;
        internal const int MAP_ANONYMOUS = 0x20;
        internal const int MADV_SEQUENTIAL = 2;
        internal const int MADV_WILLNEED = 3;
        internal const int MADV_HUGEPAGE = 14;
        internal const int MADV_POPULATE_WRITE = 23;
        internal const int MADV_DONTNEED = Memory.Madvise.DontNeed;
        internal static readonly nint MAP_FAILED = -1;
    }
}
