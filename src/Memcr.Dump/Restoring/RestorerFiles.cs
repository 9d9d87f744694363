using Memcr.CriuImages;
using Memcr.Linux.Kernel;
using Microsoft.Win32.SafeHandles;

namespace Memcr.Dump.Restoring;

/// <summary>
/// Every open file description the restored tree needs, opened or made by memcr itself: files
/// reopened at their offsets, pipes refilled with their unread bytes, eventfds, signalfds,
/// timerfds, epolls, inotify instances, memfds, sockets, and for a shell job memcr's own terminal. The processes take them with
/// pidfd_getfd: a description shared by several descriptors or processes is one object here.
/// </summary>
internal sealed class RestorerFiles : IDisposable
{
    private const int OCreatExclTrunc = 0x40 | 0x80 | 0x200, ONonblock = 0x800;

    private readonly Dictionary<uint, SafeFileHandle> _files = [];
    private readonly List<SafeFileHandle> _pipeEnds = [];
    private readonly Dictionary<uint, SafeFileHandle> _fifoKeepers = [];
    private readonly Dictionary<uint, SafeFileHandle> _memfds = [];
    private readonly Dictionary<uint, int> _seals = [];
    private readonly Dictionary<uint, uint> _memfdOfFile = [];

    /// <summary>The TCP and UDP sockets; established connections wait in repair mode for the processes to be ready.</summary>
    public required Sockets.InetSocketRestorer Sockets { get; init; }

    /// <summary>The UNIX sockets: pairs, names, queues and connections.</summary>
    public required Sockets.UnixSocketRestorer Unix { get; init; }

    /// <summary>memcr's terminal, when a shell job gets it.</summary>
    public SafeFileHandle? Terminal { get; private set; }

    public SafeFileHandle this[uint id] => _files[id];

    /// <summary>
    /// The memfd behind memfd file <paramref name="id"/> itself, read-write: what a mapping of it
    /// maps (the file entry of a mapping may say read-only, as CRIU writes it; the VMA's flags rule).
    /// </summary>
    public SafeFileHandle MemfdOf(uint id) => _memfds[_memfdOfFile[id]];

    public static RestorerFiles Open(DumpImages images, RestoreOptions options, CriuLog log)
    {
        var set = new RestorerFiles { Sockets = new Sockets.InetSocketRestorer(options, log), Unix = new Sockets.UnixSocketRestorer(images, log) };
        try
        {
            // Descriptors' files, the memfd entries that memfd mappings name, and descriptors passed in UNIX sockets' queues.
            var ids = images.Processes.SelectMany(p => p.Fds).Select(f => f.Id)
                .Concat(images.Processes.SelectMany(p => p.Mm.Vmas).Where(v => (v.Status & Dumping.MemoryDumper.Memfd) != 0).Select(v => (uint)v.Shmid))
                .Concat(images.SkQueues.SelectMany(q => q.Entry.Scm).SelectMany(s => s.Rights))
                .Distinct().Order().ToList();
            var pipeEnds = new Dictionary<(uint PipeId, bool Write), SafeFileHandle>();
            foreach (uint id in ids)
            {
                var f = images.File(id, "a descriptor");
                set._files[id] = f.Type switch
                {
                    fd_types.Reg => Regular(f.Reg),
                    fd_types.Pipe => PipeEnd(images, f.Pipe, pipeEnds),
                    fd_types.Tty => set.Tty(images, f.Tty),
                    fd_types.Eventfd => FileCalls.EventFd(f.Efd.Counter, (int)f.Efd.Flags & ONonblock),
                    fd_types.Signalfd => FileCalls.SignalFd(f.Sgfd.Sigmask, (int)f.Sgfd.Flags & ONonblock),
                    fd_types.Timerfd => FileCalls.TimerFd((int)f.Tfd.Clockid, (int)f.Tfd.Flags & ONonblock,
                        ((long)f.Tfd.Isec, (long)f.Tfd.Insec), ((long)f.Tfd.Vsec, (long)f.Tfd.Vnsec), f.Tfd.Ticks),
                    fd_types.Eventpoll => FileCalls.EpollCreate(),
                    fd_types.Fifo => set.Fifo(images, f.Fifo),
                    fd_types.Memfd => set.Memfd(images, id, f.Memfd),
                    fd_types.Unixsk => set.Unix.Open(f.Usk),
                    fd_types.Inetsk => set.Sockets.Open(images, f.Isk),
                    fd_types.Inotify => Files.Inotify.Restore(f.Ify),
                    _ => throw new CriuModeException($"file {id} is a {f.Type.OriginalName()} file, which memcr cannot restore yet"),
                };
                log.Debug($"file {id}: {f.Type.OriginalName()} ready");
            }
            set._pipeEnds.AddRange(pipeEnds.Values);
            set.Unix.Finish(id => set[id]);
            return set;
        }
        catch
        {
            set.Dispose();
            throw;
        }
    }

    private static SafeFileHandle Regular(reg_file_entry reg)
    {
        try
        {
            var fd = FileCalls.Open(reg.Name, (int)reg.Flags & ~OCreatExclTrunc);
            if (reg.Pos != 0)
                FileCalls.Seek(fd, (long)reg.Pos, reg.Name);
            return fd;
        }
        catch (Linux.SyscallException e)
        {
            throw new CriuModeException($"cannot open {reg.Name} again: {e.Message}", e);
        }
    }

    /// <summary>
    /// One end of a pipe: the pipe is made once, given its size and its unread bytes; an end wanted
    /// again by another file entry is opened anew through /proc (a second description of it).
    /// </summary>
    private static SafeFileHandle PipeEnd(DumpImages images, pipe_entry e, Dictionary<(uint, bool), SafeFileHandle> ends)
    {
        bool write = (e.Flags & 3) == 1;
        string what = $"pipe {e.PipeId}";
        if (!ends.ContainsKey((e.PipeId, false)))
        {
            var (r, w) = FileCalls.Pipe();
            if (images.PipeInfo.TryGetValue(e.PipeId, out var info))
            {
                int data = images.PipeData[e.PipeId].Length;
                FileCalls.SetPipeSize(w, (int)Math.Max(Math.Max(info.Size, (uint)data), 4096), what);
                FileCalls.WriteAll(w, images.PipeData[e.PipeId], what);
            }
            ends[(e.PipeId, false)] = r;
            ends[(e.PipeId, true)] = w;
            var mine = write ? w : r;
            FileCalls.SetStatusFlags(mine, (int)e.Flags & ONonblock, what);
            // The other end stays available (by key) for the next entry of this pipe.
            return FileCalls.Dup((int)mine.DangerousGetHandle(), what);
        }
        var end = ends[(e.PipeId, write)];
        var again = FileCalls.Open($"/proc/self/fd/{end.DangerousGetHandle()}", (int)e.Flags & ~OCreatExclTrunc);
        return again;
    }

    /// <summary>
    /// A FIFO opened again by its path. memcr first holds it open read-write (so that neither end
    /// waits for the other), refills it, then opens it as the process had it.
    /// </summary>
    private SafeFileHandle Fifo(DumpImages images, fifo_entry e)
    {
        var reg = images.File(e.RegfId, $"FIFO {e.Id}").Reg;
        if (!_fifoKeepers.TryGetValue(e.PipeId, out var keeper))
        {
            keeper = FileCalls.Open(reg.Name, 2 | ONonblock);
            _fifoKeepers[e.PipeId] = keeper;
            if (images.FifoData.TryGetValue(e.PipeId, out var data))
            {
                FileCalls.SetPipeSize(keeper, (int)Math.Max(Math.Max(images.FifoInfo[e.PipeId].Size, (uint)data.Length), 4096), reg.Name);
                FileCalls.WriteAll(keeper, data, reg.Name);
            }
        }
        var fd = FileCalls.Open(reg.Name, ((int)reg.Flags & ~OCreatExclTrunc) | ONonblock);
        FileCalls.SetStatusFlags(fd, (int)reg.Flags & ~OCreatExclTrunc & ~0x80000, reg.Name);
        return fd;
    }

    /// <summary>
    /// A memfd made again with its contents and seals; each file entry of it is a description of
    /// its own (opened through /proc), at its offset.
    /// </summary>
    private SafeFileHandle Memfd(DumpImages images, uint id, memfd_file_entry e)
    {
        _memfdOfFile[id] = e.InodeId;
        if (!_memfds.TryGetValue(e.InodeId, out var memfd))
        {
            var inode = images.MemfdInodes.TryGetValue(e.InodeId, out var i) ? i : throw new CriuModeException($"memfd.img has no inode {e.InodeId}");
            memfd = FileCalls.MemfdCreate(inode.Name, (long)inode.Size);
            var map = images.SharedPages(inode);
            using (var pages = Memcr.CriuImages.Pages.PagesReader.Open(images.Dir, map))
            {
                var buffer = new byte[1 << 20];
                foreach (var run in map.Runs.Where(r => r.InFile))
                {
                    for (long done = 0; done < run.Bytes; done += buffer.Length)
                    {
                        int n = (int)Math.Min(buffer.Length, run.Bytes - done);
                        pages.ReadAt(run.FileOffset + done, buffer.AsSpan(0, n));
                        long at = (long)run.Address + done;
                        // The last page may run past the end of the file: only the file's part goes back.
                        int keep = (int)Math.Min(n, Math.Max(0, (long)inode.Size - at));
                        if (keep > 0)
                            RandomAccess.Write(memfd, buffer.AsSpan(0, keep), at);
                    }
                }
            }
            _memfds[e.InodeId] = memfd;
            _seals[e.InodeId] = (int)inode.Seals;
        }
        var fd = FileCalls.Open($"/proc/self/fd/{memfd.DangerousGetHandle()}", (int)e.Flags & ~OCreatExclTrunc);
        if (e.Pos != 0)
            FileCalls.Seek(fd, (long)e.Pos, $"memfd {e.InodeId}");
        return fd;
    }

    /// <summary>Seals go on last: a sealed memfd could not be written or reopened for writing.</summary>
    public void SealMemfds()
    {
        foreach (var (inode, memfd) in _memfds)
            FileCalls.AddSeals(memfd, _seals[inode], $"memfd inode {inode}");
    }

    /// <summary>A shell job's terminal is memcr's: its stdin, given the dumped terminal attributes.</summary>
    private SafeFileHandle Tty(DumpImages images, tty_file_entry e)
    {
        Terminal ??= FileCalls.Dup(0, "memcr's terminal (stdin)");
        if (images.Ttys.TryGetValue(e.TtyInfoId, out var info) && info.Termios is { } t)
            TerminalCalls.SetAttributes(Terminal, Termios(t), "memcr's terminal");
        return FileCalls.Dup((int)Terminal.DangerousGetHandle(), "memcr's terminal");
    }

    public static unsafe Termios Termios(termios_entry e)
    {
        var t = new Termios { IFlag = e.CIflag, OFlag = e.COflag, CFlag = e.CCflag, LFlag = e.CLflag, Line = (byte)e.CLine };
        for (int i = 0; i < 32 && i / 4 < e.CCc.Count; i++)
            t.Cc[i] = (byte)(e.CCc[i / 4] >> (8 * (i % 4)));
        return t;
    }

    public void Dispose()
    {
        foreach (var f in _files.Values.Concat(_pipeEnds).Concat(_fifoKeepers.Values).Concat(_memfds.Values))
            f.Dispose();
        Terminal?.Dispose();
        Unix.Dispose();
    }
}
