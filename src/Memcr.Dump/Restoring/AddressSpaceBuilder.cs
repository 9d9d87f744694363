using System.Buffers.Binary;
using Memcr.CriuImages;
using Memcr.Dump.Dumping;
using Memcr.Linux.Memory;
using Memcr.Linux.Proc;
using Memcr.Linux.Ptrace;

namespace Memcr.Dump.Restoring;

/// <summary>
/// Rebuilds a process's address space by remote syscalls in one of its threads: what it holds now
/// is unmapped (all of it in a process made from the helper; what the dumped process does not
/// share with its parent in a forked child), the vDSO and vvar are moved to their dumped
/// addresses (remote syscalls go on through the moved vDSO), every dumped VMA is mapped at its
/// address, its pages are written in, and its protection and madvise state are set last.
/// </summary>
internal sealed class AddressSpaceBuilder(RestoreContext ctx, ProcessImages p, RemoteTask remote, RemoteMemory memory)
{
    private const ulong MapPrivate = 2, MapShared = 1, MapAnonymous = 0x20, MapFixed = 0x10;
    private const ulong ProtRead = 1, ProtWrite = 2;
    private const ulong MremapMaymove = 1, MremapFixed = 2;
    private const int PageSize = 4096;

    /// <summary>Empties the copy of the helper's address space, keeping the vDSO and vvar, and moves those to where the dump had them.</summary>
    public void CleanFresh()
    {
        var maps = ProcFs.ReadMaps(p.Pid);
        var keep = maps.Where(v => v.Path is "[vdso]" or "[vvar]" or "[vvar_vclock]" || v.Start >= RestoreContext.TaskSize).OrderBy(v => v.Start).ToList();
        ulong from = 0;
        foreach (var k in keep.Where(k => k.Start < RestoreContext.TaskSize))
        {
            Unmap(from, k.Start);
            from = k.End;
        }
        Unmap(from, RestoreContext.TaskSize);
        MoveVdso(maps);
    }

    private void Unmap(ulong start, ulong end)
    {
        if (end > start)
            remote.Call("munmap", remote.Nr.Munmap, start, end - start);
    }

    /// <summary>Moves [vvar], [vvar_vclock] and [vdso] (via a free area, so that no move overlaps another) to the dumped addresses.</summary>
    private void MoveVdso(List<Vma> maps)
    {
        var vdsoNow = maps.First(v => v.Path == "[vdso]");
        var vvarNow = maps.Where(v => v.Path is "[vvar]" or "[vvar_vclock]").OrderBy(v => v.Start).ToList();
        var vdso = p.Mm.Vmas.First(v => (v.Status & MemoryDumper.Vdso) != 0);
        var vvar = p.Mm.Vmas.FirstOrDefault(v => (v.Status & MemoryDumper.Vvar) != 0);
        var parts = vvarNow.Select(v => (Now: v.Start, v.Length, Target: vvar is null ? 0 : vvar.Start + (v.Start - vvarNow[0].Start)))
            .Append((Now: vdsoNow.Start, vdsoNow.Length, Target: vdso.Start)).ToList();
        if (parts.All(x => x.Now == x.Target || x.Target == 0))
            return;
        ulong total = parts.Aggregate(0UL, (s, x) => s + x.Length);
        var used = p.Mm.Vmas.Select(v => (v.Start, v.End)).Concat(maps.Select(v => (v.Start, v.End))).Append((ctx.Scratch, ctx.Scratch + RestoreContext.ScratchBytes));
        ulong temp = RestoreContext.FreeGap(used, total);
        ulong insnOffset = remote.Instruction - vdsoNow.Start;
        ulong at = temp;
        var moved = new List<(ulong Temp, ulong Length, ulong Target)>();
        foreach (var (now, length, target) in parts)
        {
            remote.Call("mremap", remote.Nr.Mremap, now, length, length, MremapMaymove | MremapFixed, at);
            if (now == vdsoNow.Start)
                remote.MoveInstruction(at + insnOffset);
            moved.Add((at, length, target));
            at += length;
        }
        foreach (var (tmp, length, target) in moved)
        {
            if (target == 0)
                continue; // no vvar in the dump: ours stays out of the way
            remote.Call("mremap", remote.Nr.Mremap, tmp, length, length, MremapMaymove | MremapFixed, target);
            if (target == vdso.Start)
                remote.MoveInstruction(vdso.Start + insnOffset);
        }
    }

    /// <summary>
    /// In a child forked from its restored parent, keeps the VMAs it shares with the parent's dump
    /// (the same mapping, inherited at fork) and unmaps the rest; returns the kept ones.
    /// </summary>
    public List<vma_entry> CleanForked(ProcessImages parent)
    {
        var kept = new List<vma_entry>();
        foreach (var v in p.Mm.Vmas.Where(v => !RestoreContext.IsSpecial(v.Status)))
        {
            var twin = parent.Mm.Vmas.FirstOrDefault(w => w.Start == v.Start && w.End == v.End && w.Status == v.Status && w.Prot == v.Prot
                && w.Flags == v.Flags && w.Shmid == v.Shmid && w.Pgoff == v.Pgoff);
            // A mapping marked MADV_DONTFORK or MADV_WIPEONFORK did not come through the fork whole.
            if (twin is not null && (twin.Madv & ((1UL << 10) | (1UL << 18))) == 0)
                kept.Add(v);
        }
        // The vDSO and vvar came through the fork where the parent has them; a child that did not
        // keep them there (it exec'd) gets them moved below.
        var maps = ProcFs.ReadMaps(p.Pid);
        var keep = kept.Select(v => (Start: v.Start, End: v.End))
            .Concat(maps.Where(v => v.Path is "[vdso]" or "[vvar]" or "[vvar_vclock]").Select(v => (Start: v.Start, End: v.End)))
            .Append((Start: ctx.Scratch, End: ctx.Scratch + (ulong)RestoreContext.ScratchBytes))
            .OrderBy(r => r.Start).ToList();
        ulong from = 0;
        foreach (var (start, end) in keep.Where(r => r.Start < RestoreContext.TaskSize))
        {
            Unmap(from, start);
            from = Math.Max(from, end);
        }
        Unmap(from, RestoreContext.TaskSize);
        MoveVdso(maps);
        return kept;
    }

    /// <summary>Maps every dumped VMA not in <paramref name="kept"/>, writable while its pages go in.</summary>
    public void MapAll(IReadOnlyCollection<vma_entry> kept)
    {
        var opened = new Dictionary<ulong, ulong>();
        long pidfd = -1;
        try
        {
            foreach (var v in p.Mm.Vmas)
            {
                if (RestoreContext.IsSpecial(v.Status) || kept.Contains(v))
                    continue;
                ulong prot = v.Prot | (HasPages(v) ? ProtRead | ProtWrite : 0);
                ulong flags = (v.Flags & (MapShared | MapPrivate)) | MapFixed | (v.Flags & (MemoryDumper.MapGrowsdown | MemoryDumper.MapNoreserve));
                ulong fd = ulong.MaxValue;
                if ((v.Status & MemoryDumper.Memfd) != 0)
                {
                    // A memfd (or shared anonymous memory) is memcr's own memfd, taken into the process.
                    if (!opened.TryGetValue(v.Shmid, out fd))
                    {
                        if (pidfd < 0)
                            pidfd = remote.Call("pidfd_open(memcr)", remote.Nr.PidfdOpen, (ulong)Environment.ProcessId, 0);
                        fd = (ulong)remote.Call("pidfd_getfd(memfd)", remote.Nr.PidfdGetfd, (ulong)pidfd, (ulong)ctx.Files.MemfdOf((uint)v.Shmid).DangerousGetHandle(), 0);
                        opened[v.Shmid] = fd;
                    }
                }
                else if ((v.Status & (MemoryDumper.FilePrivate | MemoryDumper.FileShared)) != 0)
                {
                    if (!opened.TryGetValue(v.Shmid, out fd))
                    {
                        var f = ctx.Images.File((uint)v.Shmid, $"the mapping 0x{v.Start:x} of pid {p.Pid}");
                        ulong path = remote.PutString(f.Reg.Name);
                        ulong openFlags = ((v.Status & MemoryDumper.FileShared) != 0 && (v.Prot & ProtWrite) != 0 ? 2UL : 0UL) | 0x80000;
                        fd = (ulong)remote.Call($"open({f.Reg.Name})", remote.Nr.Openat, unchecked((ulong)-100), path, openFlags, 0);
                        opened[v.Shmid] = fd;
                        remote.ResetScratch();
                    }
                }
                else
                {
                    flags |= MapAnonymous;
                }
                long r = remote.Raw(remote.Nr.Mmap, v.Start, v.End - v.Start, prot, flags, fd, fd == ulong.MaxValue ? 0 : v.Pgoff);
                if (r < 0 && r > -4096)
                    throw new Linux.SyscallException("mmap", $"pid {p.Pid} [0x{v.Start:x}-0x{v.End:x}]", (int)-r);
                if ((ulong)r != v.Start)
                    throw new CriuModeException($"pid {p.Pid}: mmap put 0x{v.Start:x}-0x{v.End:x} at 0x{r:x}");
            }
        }
        finally
        {
            foreach (ulong fd in opened.Values)
                remote.Raw(remote.Nr.Close, fd);
            if (pidfd >= 0)
                remote.Raw(remote.Nr.Close, (ulong)pidfd);
        }
    }

    private bool HasPages(vma_entry v) => p.Pages.Runs.Any(r => r.InFile && r.Address < v.End && r.End > v.Start);

    /// <summary>
    /// Writes the process's pages. In a forked child, pages of kept VMAs are compared with what it
    /// inherited, and inherited pages the child's dump does not have are dropped.
    /// </summary>
    public void LoadPages(IReadOnlyCollection<vma_entry> kept, ProcessImages? parent)
    {
        var keptRanges = kept.Select(v => (v.Start, v.End)).OrderBy(r => r.Start).ToArray();
        bool Inherited(ulong address) => keptRanges.Any(r => address >= r.Start && address < r.End);
        ctx.Pages.Load(memory, ctx.Images.Dir, p.Pages, Inherited);
        if (parent is null)
            return;
        // The parent's pages in a kept private VMA that the child's dump lacks: the child must not see them.
        foreach (var v in kept.Where(v => (v.Status & (MemoryDumper.AnonPrivate | MemoryDumper.FilePrivate)) != 0))
        {
            foreach (var run in parent.Pages.Runs.Where(r => r.Address < v.End && r.End > v.Start))
            {
                ulong start = Math.Max(run.Address, v.Start), end = Math.Min(run.End, v.End);
                foreach (var (gapStart, gapEnd) in Gaps(start, end))
                    remote.Call("madvise(MADV_DONTNEED)", remote.Nr.Madvise, gapStart, gapEnd - gapStart, Madvise.DontNeed);
            }
        }
    }

    /// <summary>Parts of [start, end) that the process's own pagemap does not cover.</summary>
    private IEnumerable<(ulong, ulong)> Gaps(ulong start, ulong end)
    {
        ulong at = start;
        foreach (var r in p.Pages.Runs.Where(r => r.Address < end && r.End > start).OrderBy(r => r.Address))
        {
            if (r.Address > at)
                yield return (at, r.Address);
            at = Math.Max(at, r.End);
        }
        if (at < end)
            yield return (at, end);
    }

    /// <summary>Gives every newly mapped VMA its dumped protection and madvise state.</summary>
    public void Protect(IReadOnlyCollection<vma_entry> kept)
    {
        foreach (var v in p.Mm.Vmas)
        {
            if (RestoreContext.IsSpecial(v.Status) || kept.Contains(v))
                continue;
            if (HasPages(v) && v.Prot != (v.Prot | ProtRead | ProtWrite))
                remote.Call("mprotect", remote.Nr.Mprotect, v.Start, v.End - v.Start, v.Prot);
            for (int advice = 0; advice < 64; advice++)
            {
                if ((v.Madv & (1UL << advice)) != 0)
                    remote.Call($"madvise({advice})", remote.Nr.Madvise, v.Start, v.End - v.Start, (ulong)advice);
            }
        }
    }

    /// <summary>prctl(PR_SET_MM, PR_SET_MM_MAP): code, data, heap, stack, arguments, environment, auxv and the executable.</summary>
    public void SetMmFields()
    {
        var mm = p.Mm;
        var exe = ctx.Images.File(mm.ExeFileId, $"pid {p.Pid}'s executable");
        ulong path = remote.PutString(exe.Reg.Name);
        ulong exeFd = (ulong)remote.Call($"open({exe.Reg.Name})", remote.Nr.Openat, unchecked((ulong)-100), path, 0x80000, 0);
        try
        {
            var auxv = new byte[mm.MmSavedAuxv.Count * 8 + 16];
            for (int i = 0; i < mm.MmSavedAuxv.Count; i++)
                BinaryPrimitives.WriteUInt64LittleEndian(auxv.AsSpan(i * 8), mm.MmSavedAuxv[i]);
            ulong auxvAt = remote.Put(auxv);
            var map = new byte[104];
            ulong[] fields = [mm.MmStartCode, mm.MmEndCode, mm.MmStartData, mm.MmEndData, mm.MmStartBrk, mm.MmBrk, mm.MmStartStack, mm.MmArgStart, mm.MmArgEnd, mm.MmEnvStart, mm.MmEnvEnd, auxvAt];
            for (int i = 0; i < fields.Length; i++)
                BinaryPrimitives.WriteUInt64LittleEndian(map.AsSpan(i * 8), fields[i]);
            BinaryPrimitives.WriteUInt32LittleEndian(map.AsSpan(96), (uint)auxv.Length);
            BinaryPrimitives.WriteUInt32LittleEndian(map.AsSpan(100), (uint)exeFd);
            ulong at = remote.Put(map);
            remote.Call("prctl(PR_SET_MM, PR_SET_MM_MAP)", remote.Nr.Prctl, 35, 14, at, (ulong)map.Length);
        }
        finally
        {
            remote.Raw(remote.Nr.Close, exeFd);
            remote.ResetScratch();
        }
    }
}
