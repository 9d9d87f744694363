using System.Buffers.Binary;
using System.Globalization;
using Memcr.CriuImages;
using Memcr.Linux;
using Memcr.Linux.Proc;
using Memcr.Linux.Ptrace;

namespace Memcr.Dump.Files;

/// <summary>
/// File locks, as CRIU keeps them in filelocks.img and only with --file-locks: flock, POSIX (fcntl)
/// and open file description locks. A dump finds each in the fdinfo of the descriptor it was
/// taken on ("lock:" lines); the restored process takes it again on that descriptor, once its
/// descriptors are in place. Leases are refused.
/// </summary>
internal static class FileLocks
{
    /// <summary>file_lock_entry.flag: the kind (CRIU's FL_*).</summary>
    public const uint Posix = 1, Flock = 2, Ofd = 4;

    /// <summary>file_lock_entry.type: F_RDLCK, F_WRLCK.</summary>
    public const uint ReadLock = 0, WriteLock = 1;

    private const ulong LockShared = 1, LockExclusive = 2, LockNonBlocking = 4;
    private const ulong FSetlk = 6, FOfdSetlk = 37;
    private const int SeekSet = 0;

    /// <summary>
    /// The locks held through fd <paramref name="fd"/> of <paramref name="pid"/>, read from its
    /// fdinfo; <paramref name="where"/> names the descriptor in errors. A request still waiting
    /// for its lock ("->") is no lock and is skipped.
    /// </summary>
    public static List<file_lock_entry> Held(int pid, int fd, FdInfo info, string where)
    {
        var locks = new List<file_lock_entry>();
        foreach (string line in info.LinesStartingWith("lock:"))
        {
            // lock:	1: POSIX  ADVISORY  WRITE 8053 fe:00:11658011 5 14
            var f = line["lock:".Length..].Split((char[])[' ', '\t'], StringSplitOptions.RemoveEmptyEntries);
            if (f.Contains("->"))
                continue;
            if (f.Length < 8)
                throw new CriuModeException($"{where}: cannot read the lock line '{line}' of /proc/{pid}/fdinfo/{fd}; pid {pid} was left running untouched");
            uint kind = f[1] switch
            {
                "POSIX" => Posix,
                "FLOCK" => Flock,
                "OFDLCK" => Ofd,
                "LEASE" => throw new CriuModeException($"{where} holds a {f[3].ToLowerInvariant()} lease ({f[2].ToLowerInvariant()}): leases are not supported; pid {pid} was left running untouched"),
                _ => throw new CriuModeException($"{where} holds a {f[1]} {f[3]} lock, which cannot be dumped (flock, POSIX and OFD locks can); pid {pid} was left running untouched"),
            };
            uint type = f[3] switch
            {
                "READ" => ReadLock,
                "WRITE" => WriteLock,
                _ => throw new CriuModeException($"{where} holds a {f[1]} lock of type {f[3]}, which cannot be dumped; pid {pid} was left running untouched"),
            };
            long start = long.Parse(f[6], NumberStyles.None, CultureInfo.InvariantCulture);
            long len = f[7] == "EOF" ? 0 : long.Parse(f[7], NumberStyles.None, CultureInfo.InvariantCulture) + 1 - start;
            locks.Add(new file_lock_entry { Flag = kind, Type = type, Pid = pid, Fd = fd, Start = start, Len = len });
        }
        return locks;
    }

    /// <summary>"a POSIX write lock on bytes 5..14" and the like, for messages.</summary>
    public static string Describe(file_lock_entry l)
    {
        string kind = l.Flag switch { Posix => "POSIX", Flock => "flock", Ofd => "OFD", _ => $"kind-{l.Flag}" };
        string type = l.Type switch { ReadLock => "read", WriteLock => "write", _ => $"type-{l.Type}" };
        string range = l.Flag == Flock ? "" : l.Len == 0 ? $" on bytes {l.Start}..EOF" : $" on bytes {l.Start}..{l.Start + l.Len - 1}";
        return $"a {kind} {type} lock{range}";
    }

    /// <summary>
    /// Has the process behind <paramref name="remote"/> take <paramref name="locks"/> on its own
    /// descriptors. Never waits: a lock someone else holds now is an error naming the lock.
    /// </summary>
    public static void Take(RemoteTask remote, IEnumerable<file_lock_entry> locks)
    {
        foreach (var l in locks)
        {
            string what = $"{Describe(l)} on its fd {l.Fd}";
            if (l.Type is not (ReadLock or WriteLock))
                throw new CriuModeException($"pid {remote.Pid} cannot take {what}: memcr knows only read and write locks");
            try
            {
                switch (l.Flag)
                {
                    case Flock:
                        remote.Call("flock", remote.Nr.Flock, (ulong)l.Fd, (l.Type == ReadLock ? LockShared : LockExclusive) | LockNonBlocking);
                        break;
                    case Posix or Ofd:
                        // struct flock: short l_type, short l_whence, (pad), off_t l_start, off_t l_len, pid_t l_pid, (pad).
                        var flock = new byte[32];
                        BinaryPrimitives.WriteInt16LittleEndian(flock, (short)l.Type);
                        BinaryPrimitives.WriteInt16LittleEndian(flock.AsSpan(2), SeekSet);
                        BinaryPrimitives.WriteInt64LittleEndian(flock.AsSpan(8), l.Start);
                        BinaryPrimitives.WriteInt64LittleEndian(flock.AsSpan(16), l.Len);
                        ulong at = remote.Put(flock);
                        remote.Call(l.Flag == Posix ? "fcntl(F_SETLK)" : "fcntl(F_OFD_SETLK)", remote.Nr.Fcntl, (ulong)l.Fd, l.Flag == Posix ? FSetlk : FOfdSetlk, at);
                        remote.ResetScratch();
                        break;
                    default:
                        throw new CriuModeException($"pid {remote.Pid} cannot take a lock of kind {l.Flag} on its fd {l.Fd}: memcr knows flock, POSIX and OFD locks");
                }
            }
            catch (SyscallException e)
            {
                throw new CriuModeException($"pid {remote.Pid} cannot take {what} again: {e.Message}{(e.Errno == 11 ? " (another process holds a lock that conflicts)" : "")}", e);
            }
        }
    }
}
