using Memcr.CriuImages;
using Memcr.Linux.Kernel;
using Microsoft.Win32.SafeHandles;

namespace Memcr.Dump.Restoring;

/// <summary>
/// Every open file description the restored tree needs, opened or made by memcr itself: files
/// reopened at their offsets, pipes refilled with their unread bytes, eventfds, signalfds,
/// timerfds, epolls, and for a shell job memcr's own terminal. The processes take them with
/// pidfd_getfd: a description shared by several descriptors or processes is one object here.
/// </summary>
internal sealed class RestorerFiles : IDisposable
{
    private const int OCreatExclTrunc = 0x40 | 0x80 | 0x200, ONonblock = 0x800;

    private readonly Dictionary<uint, SafeFileHandle> _files = [];
    private readonly List<SafeFileHandle> _pipeEnds = [];

    /// <summary>memcr's terminal, when a shell job gets it.</summary>
    public SafeFileHandle? Terminal { get; private set; }

    public SafeFileHandle this[uint id] => _files[id];

    public static RestorerFiles Open(DumpImages images, CriuLog log)
    {
        var set = new RestorerFiles();
        try
        {
            var ids = images.Processes.SelectMany(p => p.Fds).Select(f => f.Id).Distinct().Order().ToList();
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
                        ((long)f.Tfd.Isec, (long)f.Tfd.Insec), ((long)f.Tfd.Vsec, (long)f.Tfd.Vnsec)),
                    fd_types.Eventpoll => FileCalls.EpollCreate(),
                    _ => throw new CriuModeException($"file {id} is a {f.Type.OriginalName()} file, which memcr cannot restore yet"),
                };
                log.Debug($"file {id}: {f.Type.OriginalName()} ready");
            }
            set._pipeEnds.AddRange(pipeEnds.Values);
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
        foreach (var f in _files.Values.Concat(_pipeEnds))
            f.Dispose();
        Terminal?.Dispose();
    }
}
