using System.Globalization;
using Memcr.CriuImages.Json;

namespace Memcr.CriuImages.Explore;

/// <summary>
/// crit x: a dump directory shown as a process tree (ps), open files (fds), mappings (mems) and
/// resident pages against mappings (rss), line for line as crit prints them.
/// </summary>
public sealed class DumpExplorer(DumpDirectory dir, TextWriter output)
{
    private const uint VmaFilePrivate = 1 << 6, VmaFileShared = 1 << 7, VmaAnonShared = 1 << 8, VmaSysvIpc = 1 << 10, VmaSocket = 1 << 11;
    private readonly Dictionary<(fd_types, uint), string> _files = [];
    private List<file_entry>? _fileEntries;

    public static IReadOnlyList<string> Views { get; } = ["ps", "fds", "mems", "rss"];

    public void Show(string what)
    {
        switch (what)
        {
            case "ps": Ps(); break;
            case "fds": Fds(); break;
            case "mems": Mems(); break;
            case "rss": Rss(); break;
            default: throw new ArgumentException($"unknown view '{what}': use one of {string.Join(", ", Views)}", nameof(what));
        }
    }

    public void Ps()
    {
        var tree = dir.Tree;
        var kids = tree.ToLookup(p => p.Ppid);
        var byPid = tree.ToDictionary(p => p.Pid);
        foreach (var p in tree.Where(p => p.Ppid != 0 && !byPid.ContainsKey(p.Ppid)))
            throw new CriuImageException(dir.FileOf(ImageKinds.Pstree), 0, $"pid {p.Pid} has parent {p.Ppid}, which is not in the tree");
        var root = tree.LastOrDefault(p => p.Ppid == 0)
            ?? throw new CriuImageException(dir.FileOf(ImageKinds.Pstree), 0, "no root process (ppid 0)");
        Line($"{"PID",7}{"PGID",7}{"SID",7}   COMM");
        void Show(pstree_entry p, int depth)
        {
            string comm = dir.One<core_entry>(ImageKinds.Core, p.Pid).Tc?.Comm ?? "";
            Line($"{p.Pid,7}{p.Pgid,7}{p.Sid,7}   {new string(' ', 4 * depth)}{comm}");
            foreach (var kid in kids[p.Pid])
                Show(kid, depth + 1);
        }
        Show(root, 0);
    }

    public void Fds()
    {
        foreach (var p in dir.Tree)
        {
            var ids = dir.One<task_kobj_ids_entry>(ImageKinds.Ids, p.Pid);
            Line(p.Pid.ToString(CultureInfo.InvariantCulture));
            foreach (var fd in dir.All<fdinfo_entry>(ImageKinds.Fdinfo, ids.FilesId))
                Line($"\t{fd.Fd,7}: {FileName(fd.Type, fd.Id)}");
            var fs = dir.One<fs_entry>(ImageKinds.Fs, p.Pid);
            Line($"\t{"cwd",7}: {FileName(fd_types.Reg, fs.CwdId)}");
            Line($"\t{"root",7}: {FileName(fd_types.Reg, fs.RootId)}");
        }
    }

    public void Mems()
    {
        var shared = new Dictionary<ulong, int>();
        string SharedId(ulong id)
        {
            if (!shared.TryGetValue(id, out int n))
                shared[id] = n = shared.Count + 1;
            return n.ToString("x", CultureInfo.InvariantCulture);
        }
        foreach (var p in dir.Tree)
        {
            var mm = dir.One<mm_entry>(ImageKinds.Mm, p.Pid);
            Line(p.Pid.ToString(CultureInfo.InvariantCulture));
            Line($"\t{"exe",-36}    {FileName(fd_types.Reg, mm.ExeFileId)}");
            foreach (var vma in mm.Vmas)
            {
                uint st = vma.Status;
                string fn;
                if ((st & VmaSysvIpc) != 0)
                    fn = $" ips[{SharedId(vma.Shmid)}]";
                else if ((st & VmaAnonShared) != 0)
                    fn = $" shmem[{SharedId(vma.Shmid)}]";
                else if ((st & VmaSocket) != 0)
                    fn = $" packet[{SharedId(vma.Shmid)}]";
                else if ((st & (VmaFilePrivate | VmaFileShared)) != 0)
                {
                    fn = " " + FileName(fd_types.Reg, (uint)vma.Shmid);
                    if (vma.Pgoff != 0)
                        fn += $" + 0x{vma.Pgoff:x}";
                    if ((st & VmaFileShared) != 0)
                        fn += " (s)";
                }
                else if ((st & (1 << 1)) != 0)
                    fn = " [stack]";
                else if ((st & (1 << 2)) != 0)
                    fn = " [vsyscall]";
                else if ((st & (1 << 3)) != 0)
                    fn = " [vdso]";
                else if ((vma.Flags & 0x100) != 0)
                    fn = " [stack?]"; // MAP_GROWSDOWN
                else
                    fn = "";
                if ((st & 1) == 0)
                    fn += " *"; // not VMA_AREA_REGULAR
                string prot = ((vma.Prot & 1) != 0 ? "r" : "-") + ((vma.Prot & 2) != 0 ? "w" : "-") + ((vma.Prot & 4) != 0 ? "x" : "-");
                Line($"\t{$"{vma.Start:x8}-{vma.End:x8}",-36}{prot}{fn}");
            }
        }
    }

    public void Rss()
    {
        foreach (var p in dir.Tree)
        {
            var vmas = dir.One<mm_entry>(ImageKinds.Mm, p.Pid).Vmas;
            var (_, entries) = dir.Pagemap(p.Pid);
            Line(p.Pid.ToString(CultureInfo.InvariantCulture));
            // crit walks the VMAs with an index that can step back to -1, which Python reads as the last one.
            vma_entry V(int i) => vmas[i < 0 ? i + vmas.Count : i];
            int vmi = 0, pvmi = -1;
            foreach (var pm in entries)
            {
                ulong pages = pm.HasNrPages ? pm.NrPages : pm.CompatNrPages;
                string pstr = $"\t{pm.Vaddr:x} / {pages,-8}";
                while (vmi < vmas.Count && V(vmi).End <= pm.Vaddr)
                    vmi++;
                ulong end = pm.Vaddr + (pages << 12);
                var vstr = new System.Text.StringBuilder();
                while (vmi < vmas.Count && V(vmi).Start < end)
                {
                    var vma = V(vmi);
                    if (vmi == pvmi)
                    {
                        vstr.Append(" ~");
                    }
                    else
                    {
                        vstr.Append($" {vma.Start:x8} / {(vma.End - vma.Start) >> 12,-8}");
                        if ((vma.Status & (VmaFilePrivate | VmaFileShared)) != 0)
                            vstr.Append(' ').Append(FileName(fd_types.Reg, (uint)vma.Shmid));
                        pvmi = vmi;
                    }
                    vstr.Append("\n\t").Append(' ', 23);
                    vmi++;
                }
                vmi--;
                Line($"{pstr,-24}{vstr}");
            }
        }
    }

    /// <summary>What crit names an open file: a path, pipe[N], unix[INO (PEER) NAME], or TYPE.ID.</summary>
    private string FileName(fd_types type, uint id)
    {
        if (_files.TryGetValue((type, id), out var known))
            return known;
        string name = type switch
        {
            fd_types.Reg => Find(id, f => f.Reg, ImageKinds.RegFiles, (reg_file_entry r) => r.Id)?.Name ?? "unknown path",
            fd_types.Pipe => Find(id, f => f.Pipe, ImageKinds.Pipes, (pipe_entry x) => x.Id) is { } pipe ? $"pipe[{pipe.PipeId}]" : "pipe[?]",
            fd_types.Unixsk => Find(id, f => f.Usk, ImageKinds.UnixSk, (unix_sk_entry x) => x.Id) is { } u
                ? $"unix[{u.Ino} ({u.Peer}){(u.Name.IsEmpty ? "" : " " + QuotedPrintable.Encode(u.Name.Span))}]"
                : "unix[?]",
            _ => $"{type.OriginalName()}.{id}",
        };
        _files[(type, id)] = name;
        return name;
    }

    /// <summary>A file's entry in files.img, or in the image CRIU used for its kind before files.img.</summary>
    private T? Find<T>(uint id, Func<file_entry, T?> part, ImageKind legacy, Func<T, uint> idOf) where T : class, Google.Protobuf.IMessage<T>
    {
        if (_fileEntries is null)
        {
            try
            {
                _fileEntries = [.. dir.All<file_entry>(ImageKinds.Files)];
            }
            catch (Exception e) when (e is IOException or CriuImageException or UnauthorizedAccessException)
            {
                _fileEntries = [];
            }
        }
        if (_fileEntries.Count > 0 && _fileEntries.FirstOrDefault(f => f.Id == id) is { } entry)
            return part(entry);
        return dir.All<T>(legacy).FirstOrDefault(x => idOf(x) == id);
    }

    private void Line(string text) => output.WriteLine(text);
}
