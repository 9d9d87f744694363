using System.Runtime.InteropServices;

namespace Memcr.Linux;

internal static partial class Interop
{
    [StructLayout(LayoutKind.Sequential)]
    internal struct RLimit
    {
        public ulong Current;
        public ulong Max;
    }

    internal static partial class Libc
    {
        internal const int RLIMIT_NOFILE = 7;

        [LibraryImport("libc", EntryPoint = "getrlimit", SetLastError = true)]
        internal static partial int getrlimit(int resource, out RLimit limit);

        [LibraryImport("libc", EntryPoint = "setrlimit", SetLastError = true)]
        internal static partial int setrlimit(int resource, in RLimit limit);

        internal const int AT_FDCWD = -100;
        internal const int AT_SYMLINK_NOFOLLOW = 0x100;
        internal const uint STATX_TYPE = 1;

        /// <summary>statx(2): <paramref name="buffer"/> receives a struct statx (256 bytes; stx_mode is the u16 at offset 28).</summary>
        [LibraryImport("libc", EntryPoint = "statx", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
        internal static unsafe partial int statx(int dirfd, string path, int flags, uint mask, byte* buffer);

        [LibraryImport("libc", EntryPoint = "statx", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
        internal static unsafe partial int statx_fd(int dirfd, string path, int flags, uint mask, byte* buffer);

        [LibraryImport("libc", EntryPoint = "chown", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
        internal static partial int chown(string path, int owner, int group);
    }
}
