using System.Globalization;
using Memcr.CriuImages;
using Memcr.Linux.Kernel;
using Memcr.Linux.Proc;
using Microsoft.Win32.SafeHandles;

namespace Memcr.Dump.Files;

/// <summary>
/// One process's descriptors as fdinfo entries, each pointing at its file in the
/// <see cref="FileTable"/>: regular files and directories, character devices that are opened by
/// name (/dev/null and the like), pipes with their unread bytes, the terminal of a shell job,
/// eventfd, epoll, signalfd, timerfd, inotify, memfds, UNIX, TCP and UDP sockets, and the
/// descriptors passed in messages queued on UNIX sockets. Anything else is refused, naming the pid,
/// fd and kind, before the process is changed in any way.
/// </summary>
internal sealed class FdDumper(FileTable files, Sockets.InetSocketDumper sockets, Sockets.UnixSocketDumper unix, DumpOptions options, CriuLog log)
{
    private const int OCloexec = 0x80000, ONonblock = 0x800;

    /// <summary>Devices restored by opening their path again: they keep no state of their own.</summary>
    private static readonly HashSet<(uint, uint)> PlainDevices = [(1, 3), (1, 5), (1, 7), (1, 8), (1, 9)];

    public List<fdinfo_entry> Dump(int pid, SafeFileHandle pidfd)
    {
        var entries = new List<fdinfo_entry>();
        foreach (var (fd, link) in ProcFds.List(pid))
        {
            var info = ProcFds.Info(pid, fd);
            string fdPath = $"/proc/{pid}/fd/{fd}";
            var st = FileCalls.Stat(fdPath);
            uint fdFlags = (info.Flags & OCloexec) != 0 ? 1u : 0u;
            uint flags = (uint)(info.Flags & ~OCloexec);
            string where = $"fd {fd} of pid {pid} ({link})";
            var type = KindOf(where, pid, link, st);
            var locks = FileLocks.Held(pid, fd, info, where);
            if (locks.Count > 0 && !options.FileLocks)
                throw new CriuModeException($"{where} holds {FileLocks.Describe(locks[0])}: dump file locks with --file-locks (-l), as with CRIU; pid {pid} was left running untouched");
            uint id = files.SharedDescription(pid, fd, st) ?? Describe(pid, fd, where, link, st, info, flags, type, pidfd);
            files.Remember(pid, fd, st, id);
            foreach (var l in locks)
                files.AddLock(id, l);
            entries.Add(new fdinfo_entry { Id = id, Flags = fdFlags, Type = type, Fd = (uint)fd });
            log.Debug($"pid {pid} fd {fd}: {type} {link} (file {id})");
        }
        return entries;
    }

    /// <summary>
    /// A descriptor passed in a message queued on a socket of pid <paramref name="owner"/>, which
    /// arrived in memcr when the message was peeked: a file of the dump like any other (the same
    /// file entry when a process has the same description).
    /// </summary>
    private uint DescribePassed(int fd, string where, int owner)
    {
        int self = Environment.ProcessId;
        string proc = $"/proc/self/fd/{fd}";
        string link = new FileInfo(proc).LinkTarget ?? "";
        var st = FileCalls.Stat(proc);
        var info = ProcFds.Info(self, fd);
        where = $"{where} ({link})";
        var type = KindOf(where, owner, link, st);
        uint id = files.SharedDescription(self, fd, st) ?? Describe(self, fd, where, link, st, info, (uint)(info.Flags & ~OCloexec), type, null, owner);
        files.Remember(self, fd, st, id);
        log.Debug($"{where}: {type} (file {id})");
        return id;
    }

    private fd_types KindOf(string where, int pid, string link, FileStatus st)
    {
        if (link.StartsWith("pipe:", StringComparison.Ordinal))
            return fd_types.Pipe;
        if (link.StartsWith("socket:", StringComparison.Ordinal))
        {
            if (unix.Find((uint)st.Inode) is { } u)
            {
                Sockets.UnixSocketDumper.Check(u, where, pid);
                return fd_types.Unixsk;
            }
            if (sockets.Find((uint)st.Inode) is { } inet)
            {
                sockets.Check(inet, where, pid);
                return fd_types.Inetsk;
            }
            throw new CriuModeException($"{where} is a socket that is neither UNIX, TCP nor UDP (netlink, packet or raw), which memcr cannot dump; pid {pid} was left running untouched");
        }
        if (link.StartsWith("/memfd:", StringComparison.Ordinal))
            return fd_types.Memfd;
        if (link.StartsWith("anon_inode:", StringComparison.Ordinal))
        {
            return link switch
            {
                "anon_inode:[eventfd]" => fd_types.Eventfd,
                "anon_inode:[eventpoll]" => fd_types.Eventpoll,
                "anon_inode:[signalfd]" => fd_types.Signalfd,
                "anon_inode:[timerfd]" => fd_types.Timerfd,
                "anon_inode:inotify" => fd_types.Inotify,
                _ => throw new CriuModeException($"{where} is an {link[11..]} descriptor, which cannot be dumped; pid {pid} was left running untouched"),
            };
        }
        if (!link.StartsWith('/'))
            throw new CriuModeException($"{where} is a {link.Split(':')[0]} descriptor, which cannot be dumped; pid {pid} was left running untouched");
        if (link.EndsWith(" (deleted)", StringComparison.Ordinal))
            throw new CriuModeException($"{where} is a file that was deleted while open: deleted files are not supported; pid {pid} was left running untouched");
        if (st.IsFifo)
            return fd_types.Fifo;
        if (st.IsCharDevice)
        {
            if (IsTerminal(st))
            {
                if (!options.ShellJob)
                    throw new CriuModeException($"{where} is the terminal {link}: dump a program on a terminal with --shell-job (-j); pid {pid} was left running untouched");
                return fd_types.Tty;
            }
            if (!PlainDevices.Contains((st.RdevMajor, st.RdevMinor)))
                throw new CriuModeException($"{where} is the device {st.RdevMajor}:{st.RdevMinor}, which memcr does not know how to restore; pid {pid} was left running untouched");
            return fd_types.Reg;
        }
        if (st.IsBlockDevice || st.IsSocket)
            throw new CriuModeException($"{where} cannot be dumped (a {(st.IsSocket ? "socket" : "block device")}); pid {pid} was left running untouched");
        return fd_types.Reg;
    }

    /// <summary>Pseudo-terminals (major 136..143) and virtual consoles (major 4).</summary>
    private static bool IsTerminal(FileStatus st) => st.RdevMajor is >= 136 and <= 143 || (st.RdevMajor == 4 && st.RdevMinor < 64);

    /// <summary>
    /// The file entry of fd <paramref name="fd"/> of <paramref name="pid"/>, taken with
    /// <paramref name="pidfd"/> (or, with none, memcr's own descriptor: a passed one, whose
    /// socket belongs to <paramref name="owner"/>).
    /// </summary>
    private uint Describe(int pid, int fd, string where, string link, FileStatus st, FdInfo info, uint flags, fd_types type, SafeFileHandle? pidfd, int owner = 0)
    {
        uint id = files.NewId();
        using var file = pidfd is null ? FileCalls.Dup(fd, where) : ProcessCalls.TakeFd(pidfd, pid, fd);
        if (owner == 0)
            owner = pid;
        var fown = Fown(file);
        var entry = new file_entry { Type = type, Id = id };
        switch (type)
        {
            case fd_types.Reg:
                entry.Reg = FileTable.RegEntry(id, link, st, flags, (ulong)Math.Max(0, info.Pos), fown, () => OpenForReading($"/proc/{pid}/fd/{fd}"));
                break;
            case fd_types.Pipe:
                entry.Pipe = new pipe_entry { Id = id, PipeId = (uint)st.Inode, Flags = flags, Fown = fown };
                Contents(file, (uint)st.Inode, where, files.PipeData);
                break;
            case fd_types.Tty:
                entry.Tty = Terminal(pid, fd, link, st, file, flags, fown, id);
                break;
            case fd_types.Fifo:
                uint regf = files.NewId();
                files.Entries.Add(new file_entry { Type = fd_types.Reg, Id = regf, Reg = FileTable.RegEntry(regf, link, st, flags, 0, FileTable.NoOwner(), null) });
                entry.Fifo = new fifo_entry { Id = id, PipeId = (uint)st.Inode, RegfId = regf };
                Contents(file, (uint)st.Inode, where, files.FifoData);
                break;
            case fd_types.Memfd:
                string name = link["/memfd:".Length..].Replace(" (deleted)", "", StringComparison.Ordinal);
                uint inode = files.MemfdInode(st, name, () => FileCalls.Dup((int)file.DangerousGetHandle(), link));
                entry.Memfd = new memfd_file_entry { Id = id, Flags = flags, Pos = (ulong)Math.Max(0, info.Pos), Fown = fown, InodeId = inode };
                break;
            case fd_types.Unixsk:
                entry.Usk = unix.Describe(id, flags, fown, unix.Find((uint)st.Inode)!, file, where, owner, (passed, what) => DescribePassed(passed, what, owner));
                break;
            case fd_types.Inetsk:
                entry.Isk = sockets.Describe(id, flags, fown, sockets.Find((uint)st.Inode)!, file, where);
                break;
            case fd_types.Eventfd:
                entry.Efd = new eventfd_file_entry { Id = id, Flags = flags, Fown = fown, Counter = Hex(info.Value("eventfd-count")) };
                break;
            case fd_types.Eventpoll:
                entry.Epfd = new eventpoll_file_entry { Id = id, Flags = flags, Fown = fown };
                foreach (var line in info.LinesStartingWith("tfd:"))
                    entry.Epfd.Tfd.Add(EpollTarget(id, line));
                break;
            case fd_types.Signalfd:
                entry.Sgfd = new signalfd_entry { Id = id, Flags = flags, Fown = fown, Sigmask = Hex(info.Value("sigmask")) };
                break;
            case fd_types.Timerfd:
                entry.Tfd = Timer(id, flags, fown, info);
                break;
            case fd_types.Inotify:
                entry.Ify = Inotify.Dump(id, flags, fown, info, pid, fd);
                break;
        }
        files.Entries.Add(entry);
        return id;
    }

    /// <summary>The file behind a /proc link, opened again for reading (for its build-id), or null when it cannot be.</summary>
    public static Stream? OpenForReading(string procLink)
    {
        try
        {
            return File.OpenRead(procLink);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    private static fown_entry Fown(SafeFileHandle file)
    {
        var (type, pid, signal) = FileCalls.Owner(file);
        return new fown_entry { Uid = 0, Euid = 0, Signum = (uint)signal, PidType = (uint)type, Pid = (uint)pid };
    }

    /// <summary>A pipe's unread bytes, copied with tee(2) so that they stay where they are.</summary>
    private void Contents(SafeFileHandle pipe, uint pipeId, string what, List<(pipe_data_entry, byte[])> into)
    {
        if (files.PipeSeen(pipeId))
            return;
        // tee(2) reads: a write end is opened again for reading (a new description of the same pipe).
        using var readable = (FileCalls.StatusFlags(pipe) & 3) == 1 ? FileCalls.Open($"/proc/self/fd/{pipe.DangerousGetHandle()}", ONonblock) : null;
        pipe = readable ?? pipe;
        int size = FileCalls.PipeSize(pipe);
        int queued = FileCalls.Available(pipe, what);
        if (queued == 0)
            return;
        var (read, write) = FileCalls.Pipe(nonBlocking: true);
        using (read)
        using (write)
        {
            FileCalls.SetPipeSize(write, Math.Max(size, 4096), what);
            long copied = FileCalls.Tee(pipe, write, queued, what);
            var data = new byte[copied];
            int got = 0;
            while (got < data.Length)
            {
                int n = FileCalls.Read(read, data.AsSpan(got), what);
                if (n == 0)
                    break;
                got += n;
            }
            if (got != queued)
                throw new CriuModeException($"{what}: {queued} bytes queued but {got} could be copied");
            into.Add((new pipe_data_entry { PipeId = pipeId, Bytes = (uint)got, Size = (uint)size }, data));
        }
    }

    /// <summary>The shell job's terminal: its tty_info (attributes, size, session, group) and the path it was opened by.</summary>
    private tty_file_entry Terminal(int pid, int fd, string link, FileStatus st, SafeFileHandle file, uint flags, fown_entry fown, uint id)
    {
        uint index = st.RdevMajor == 4 ? st.RdevMinor : (st.RdevMajor - 136) * 256 + st.RdevMinor;
        var (infoId, isNew) = files.Tty(st.KernelRdev, index);
        if (isNew)
        {
            string what = $"{link} (fd {fd} of pid {pid})";
            var t = TerminalCalls.GetAttributes(file, what);
            var (rows, cols, x, y) = TerminalCalls.GetWindowSize(file, what);
            files.TtyInfos.Add(new tty_info_entry
            {
                Id = infoId,
                Type = st.RdevMajor == 4 ? TtyType.Vt : TtyType.Pty,
                Locked = false,
                Exclusive = TerminalCalls.Exclusive(file),
                PacketMode = false,
                Sid = (uint)TerminalCalls.Session(file),
                Pgrp = (uint)TerminalCalls.ForegroundGroup(file),
                Rdev = (uint)st.Rdev,
                Termios = TermiosEntry(t),
                TermiosLocked = TermiosEntry(default),
                Winsize = new winsize_entry { WsRow = rows, WsCol = cols, WsXpixel = x, WsYpixel = y },
                Pty = st.RdevMajor == 4 ? null : new tty_pty_entry { Index = index },
                Dev = (uint)st.Dev,
                Uid = st.Uid,
                Gid = st.Gid,
            });
        }
        uint regf = files.NewId();
        files.Entries.Add(new file_entry { Type = fd_types.Reg, Id = regf, Reg = FileTable.RegEntry(regf, link, st, flags, 0, FileTable.NoOwner(), null) });
        return new tty_file_entry { Id = id, TtyInfoId = infoId, Flags = flags, Fown = fown, RegfId = regf };
    }

    /// <summary>
    /// termios as CRIU keeps it: c_cc is glibc's 32-byte array copied into the first eight of 19
    /// 32-bit words (the rest is unused).
    /// </summary>
    public static unsafe termios_entry TermiosEntry(Termios t)
    {
        var e = new termios_entry { CIflag = t.IFlag, COflag = t.OFlag, CCflag = t.CFlag, CLflag = t.LFlag, CLine = t.Line, CIspeed = 0, COspeed = 0 };
        for (int w = 0; w < 19; w++)
            e.CCc.Add(w < 8 ? (uint)(t.Cc[4 * w] | (t.Cc[4 * w + 1] << 8) | (t.Cc[4 * w + 2] << 16) | (t.Cc[4 * w + 3] << 24)) : 0);
        return e;
    }

    private static eventpoll_tfd_entry EpollTarget(uint id, string line)
    {
        // "tfd:        5 events:       19 data:                0  pos:0 ino:2a sdev:d"
        var words = line.Split((char[])[' ', '\t'], StringSplitOptions.RemoveEmptyEntries);
        string Value(string key)
        {
            int i = Array.FindIndex(words, w => w.StartsWith(key, StringComparison.Ordinal));
            if (i < 0)
                return "0";
            string inline = words[i][key.Length..];
            return inline.Length > 0 ? inline : words[i + 1];
        }
        return new eventpoll_tfd_entry
        {
            Id = id,
            Tfd = uint.Parse(Value("tfd:"), CultureInfo.InvariantCulture),
            Events = Convert.ToUInt32(Value("events:"), 16),
            Data = Convert.ToUInt64(Value("data:"), 16),
            Pos = ulong.Parse(Value("pos:"), CultureInfo.InvariantCulture),
            Inode = Convert.ToUInt64(Value("ino:"), 16),
            Dev = Convert.ToUInt32(Value("sdev:"), 16),
        };
    }

    private static timerfd_entry Timer(uint id, uint flags, fown_entry fown, FdInfo info)
    {
        // "it_value: (0, 999706393)", "it_interval: (1, 0)"
        static (ulong, ulong) Pair(string? s)
        {
            var parts = (s ?? "(0, 0)").Trim('(', ')').Split(',', StringSplitOptions.TrimEntries);
            return (ulong.Parse(parts[0], CultureInfo.InvariantCulture), ulong.Parse(parts[1], CultureInfo.InvariantCulture));
        }
        var (vsec, vnsec) = Pair(info.Value("it_value"));
        var (isec, insec) = Pair(info.Value("it_interval"));
        return new timerfd_entry
        {
            Id = id,
            Flags = flags,
            Fown = fown,
            Clockid = uint.Parse(info.Value("clockid") ?? "0", CultureInfo.InvariantCulture),
            Ticks = ulong.Parse(info.Value("ticks") ?? "0", CultureInfo.InvariantCulture),
            SettimeFlags = Convert.ToUInt32(info.Value("settime flags") ?? "0", 8),
            Vsec = vsec,
            Vnsec = vnsec,
            Isec = isec,
            Insec = insec,
        };
    }

    private static ulong Hex(string? s) => s is null ? 0 : Convert.ToUInt64(s, 16);
}
