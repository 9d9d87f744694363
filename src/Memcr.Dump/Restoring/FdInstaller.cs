using System.Buffers.Binary;
using Memcr.CriuImages;
using Memcr.Linux.Ptrace;

namespace Memcr.Dump.Restoring;

/// <summary>
/// Gives a process its descriptors: every inherited one is closed, then each dumped descriptor is
/// taken from memcr with pidfd_getfd (the same open file description memcr made or opened) and
/// moved to its number with dup3, close-on-exec as it was. Epoll registrations are made last, on
/// the process's own descriptor numbers, as the kernel keys them.
/// </summary>
internal static class FdInstaller
{
    private const ulong FDupfdCloexec = 1030, FSetfd = 2, OCloexec = 0x80000, EpollCtlAdd = 1;

    public static void Install(RestoreContext ctx, ProcessImages p, RemoteTask remote)
    {
        remote.Call("close_range", remote.Nr.CloseRange, 0, uint.MaxValue, 0);
        if (p.Fds.Count == 0)
            return;
        ulong above = p.Fds.Max(f => f.Fd) + 1;
        long pidfd = remote.Call("pidfd_open(memcr)", remote.Nr.PidfdOpen, (ulong)Environment.ProcessId, 0);
        long high = remote.Call("fcntl(F_DUPFD_CLOEXEC)", remote.Nr.Fcntl, (ulong)pidfd, FDupfdCloexec, above);
        remote.Call("close", remote.Nr.Close, (ulong)pidfd);
        try
        {
            foreach (var fd in p.Fds.OrderBy(f => f.Fd))
            {
                var ours = ctx.Files[fd.Id];
                long got = remote.Call($"pidfd_getfd(fd {fd.Fd})", remote.Nr.PidfdGetfd, (ulong)high, (ulong)ours.DangerousGetHandle(), 0);
                bool cloexec = (fd.Flags & 1) != 0;
                if (got != fd.Fd)
                {
                    remote.Call($"dup3({got}, {fd.Fd})", remote.Nr.Dup3, (ulong)got, fd.Fd, cloexec ? OCloexec : 0);
                    remote.Call("close", remote.Nr.Close, (ulong)got);
                }
                else if (!cloexec)
                {
                    remote.Call("fcntl(F_SETFD)", remote.Nr.Fcntl, fd.Fd, FSetfd, 0); // pidfd_getfd sets FD_CLOEXEC
                }
            }
        }
        finally
        {
            remote.Raw(remote.Nr.Close, (ulong)high);
        }
        foreach (var fd in p.Fds)
        {
            var f = ctx.Images.File(fd.Id, $"fd {fd.Fd} of pid {p.Pid}");
            // An epoll shared by several processes is one object: its watches are made once.
            if (f.Type != fd_types.Eventpoll || !ctx.EpollsDone.Add(fd.Id))
                continue;
            foreach (var t in f.Epfd.Tfd)
            {
                if (!p.Fds.Any(x => x.Fd == t.Tfd))
                {
                    ctx.Log.Warn($"pid {p.Pid}: epoll fd {fd.Fd} watches fd {t.Tfd}, which the process no longer has: that watch is dropped");
                    continue;
                }
                // struct epoll_event is packed on x86_64: 4 bytes of events, then 8 of data.
                var ev = new byte[12];
                BinaryPrimitives.WriteUInt32LittleEndian(ev, t.Events);
                BinaryPrimitives.WriteUInt64LittleEndian(ev.AsSpan(4), t.Data);
                ulong at = remote.Put(ev);
                remote.Call($"epoll_ctl(fd {fd.Fd}, ADD, {t.Tfd})", remote.Nr.EpollCtl, fd.Fd, EpollCtlAdd, t.Tfd, at);
                remote.ResetScratch();
            }
        }
    }
}
