using System.Buffers.Binary;
using Memcr.CriuImages;
using Memcr.Dump.Files;
using Memcr.Linux.Memory;
using Memcr.Linux.Proc;
using Memcr.Linux.Ptrace;

namespace Memcr.Dump.Restoring;

/// <summary>
/// Makes one process of the tree and, depth first, its children: the address space, descriptors,
/// session and group; then each child, forked by a remote clone3 in this process once its memory
/// is in place (so that what they shared copy-on-write is shared again); then its threads, by
/// remote clone3(CLONE_THREAD); then the rest of its state, registers last. Every process is left
/// stopped under ptrace, to be let go with all the others.
/// </summary>
internal sealed class ProcessBuilder(RestoreContext ctx)
{
    public const ulong CloneParent = 0x8000, SigChld = 17;
    private const ulong CloneThreadFlags = 0x100 | 0x200 | 0x400 | 0x800 | 0x10000 | 0x40000;

    /// <summary>Builds <paramref name="p"/>, just made by clone3 and adopted as <paramref name="tracer"/>; <paramref name="parent"/> is null for the root.</summary>
    public void Build(ProcessImages p, Tracer tracer, ProcessImages? parent)
    {
        ctx.Made.Add(tracer);
        var log = ctx.Log;
        using var memory = new RemoteMemory(p.Pid);
        var maps = ProcFs.ReadMaps(p.Pid);
        ulong insn = RemoteSyscall.FindSyscallInstruction(p.Pid, maps.Where(v => v.Path == "[vdso]").ToList(), ctx.Arch, memory);
        using var remote = RemoteTask.Open(tracer, ctx.Arch, memory, insn, p.Pid);
        // A copy of the helper (or of the parent's thread) may carry an rseq registration into memory that is about to go.
        if (tracer.GetRseq(p.Pid) is { } rseq)
            remote.Call("rseq(unregister)", remote.Nr.Rseq, rseq.Address, rseq.Size, 1, rseq.Signature);

        var space = new AddressSpaceBuilder(ctx, p, remote, memory);
        List<vma_entry> kept;
        if (parent is null)
        {
            space.CleanFresh();
            remote.MapScratch(RestoreContext.ScratchBytes, ctx.Scratch);
            kept = [];
        }
        else
        {
            remote.UseScratch(ctx.Scratch, RestoreContext.ScratchBytes);
            kept = space.CleanForked(parent);
        }
        space.MapAll(kept);
        log.Debug($"pid {p.Pid}: VMAs mapped");
        space.LoadPages(kept, parent);
        log.Debug($"pid {p.Pid}: pages written");
        space.Protect(kept);
        log.Debug($"pid {p.Pid}: address space rebuilt ({p.Mm.Vmas.Count} VMAs, {kept.Count} inherited)");

        FdInstaller.Install(ctx, p, remote);
        if (ctx.Options.FileLocks)
            FileLocks.Take(remote, ctx.Images.Locks.Where(l => l.Pid == p.Pid));
        SessionAndGroup(p, remote, parent);

        foreach (var child in p.Children)
        {
            Clone(remote, child.Pid, 0, SigChld);
            Build(child, Tracer.Adopt(child.Pid, log.Debug), p);
        }
        foreach (uint tid in p.Threads.Where(t => t != p.Tree.Pid))
        {
            Clone(remote, (int)tid, CloneThreadFlags, 0);
            tracer.AddThread((int)tid);
        }

        space.SetMmFields();
        TaskRestorer.Process(ctx, p, remote);
        foreach (uint tid in p.Threads.Where(t => t != p.Tree.Pid))
        {
            using var own = RemoteTask.Open(tracer, ctx.Arch, memory, remote.Instruction, (int)tid);
            own.UseScratch(ctx.Scratch, RestoreContext.ScratchBytes);
            TaskRestorer.Thread(ctx, p, (int)tid, own);
        }
        TaskRestorer.Thread(ctx, p, p.Pid, remote);
        remote.UnmapScratch();
        remote.Dispose();
        foreach (uint tid in p.Threads)
            TaskRestorer.Registers(tracer, p, (int)tid);
        log.Info($"pid {p.Pid} ({p.Leader.Tc?.Comm}) restored: {p.Cores.Count} thread(s), {p.Fds.Count} fds");
    }

    /// <summary>clone3 with set_tid = <paramref name="id"/>, run in the thread of <paramref name="remote"/>.</summary>
    public static void Clone(RemoteTask remote, int id, ulong flags, ulong exitSignal)
    {
        var tid = new byte[4];
        BinaryPrimitives.WriteInt32LittleEndian(tid, id);
        ulong tidAt = remote.Put(tid);
        // struct clone_args: flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid, set_tid_size, cgroup.
        var args = new byte[88];
        BinaryPrimitives.WriteUInt64LittleEndian(args, flags);
        BinaryPrimitives.WriteUInt64LittleEndian(args.AsSpan(32), exitSignal);
        BinaryPrimitives.WriteUInt64LittleEndian(args.AsSpan(64), tidAt);
        BinaryPrimitives.WriteUInt64LittleEndian(args.AsSpan(72), 1);
        ulong at = remote.Put(args);
        long r = remote.Raw(remote.Nr.Clone3, at, (ulong)args.Length);
        remote.ResetScratch();
        if (r == -17)
            throw new CriuModeException($"pid {id} was taken by another process while the tree was being restored");
        if (r < 0)
            throw new Linux.SyscallException("clone3", $"pid {id} (set_tid, in pid {remote.Pid})", (int)-r);
        if (r != id)
            throw new CriuModeException($"clone3 made pid {r} instead of {id}");
    }

    /// <summary>
    /// The dumped session and process group: a session leader starts its own session, a group
    /// leader its own group, others join their group. A shell job's root stays in memcr's session
    /// (and group, unless it led its own).
    /// </summary>
    private void SessionAndGroup(ProcessImages p, RemoteTask remote, ProcessImages? parent)
    {
        uint sid = p.Tree.Sid, pgid = p.Tree.Pgid;
        if (sid == p.Tree.Pid)
        {
            remote.Call("setsid", remote.Nr.Setsid);
            return;
        }
        if (pgid == p.Tree.Pid)
        {
            remote.Call("setpgid", remote.Nr.Setpgid, 0, 0);
            return;
        }
        // Not a leader: it joins its group; a group from outside the tree (the shell's) is memcr's.
        bool inTree = ctx.Images.Processes.Any(x => x.Tree.Pid == pgid);
        uint want = inTree ? pgid : (uint)ctx.OurGroup;
        uint now = parent is null ? (uint)ctx.OurGroup : parent.Tree.Pgid == parent.Tree.Pid || ctx.Images.Processes.Any(x => x.Tree.Pid == parent.Tree.Pgid) ? parent.Tree.Pgid : (uint)ctx.OurGroup;
        if (want != now)
            remote.Call($"setpgid(0, {want})", remote.Nr.Setpgid, 0, want);
    }
}
