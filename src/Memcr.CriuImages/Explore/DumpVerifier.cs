namespace Memcr.CriuImages.Explore;

/// <summary>
/// memcr crit verify DIR: checks that a dump is whole and consistent, as a restore will need it:
/// every image parses to its end; each pagemap's present pages are exactly its pages-N.img; each
/// descriptor names a file entry of its type; every process has its core, ids, mm, fs and
/// pagemap images, every thread its core image. Each problem is one line naming the file.
/// </summary>
public sealed class DumpVerifier(DumpDirectory dir)
{
    private const long PageSize = 4096;
    private const uint PeParent = 1, PePresent = 4;

    public List<string> Check()
    {
        var problems = new List<string>();
        if (!Directory.Exists(dir.Path))
            return [$"{dir.Path}: no such directory"];
        var parsed = CheckEveryImage(problems);
        if (!parsed.Contains(ImageKinds.Inventory.FileName))
            problems.Add($"{dir.FileOf(ImageKinds.Inventory)}: missing: every dump has an inventory");
        if (!parsed.Contains(ImageKinds.Pstree.FileName))
        {
            problems.Add($"{dir.FileOf(ImageKinds.Pstree)}: missing: there is no process tree to restore");
            return problems;
        }
        CheckProcesses(problems, parsed);
        CheckPages(problems, parsed);
        return problems;
    }

    /// <summary>Reads every image in the directory to its end; returns the names of those that parsed.</summary>
    private HashSet<string> CheckEveryImage(List<string> problems)
    {
        var ok = new HashSet<string>(StringComparer.Ordinal);
        foreach (var file in Directory.GetFiles(dir.Path).OrderBy(f => f, StringComparer.Ordinal))
        {
            string name = Path.GetFileName(file);
            if (name.StartsWith("pages-", StringComparison.Ordinal) && name.EndsWith(".img", StringComparison.Ordinal))
                continue; // raw page data: checked against the pagemaps
            if (!name.EndsWith(".img", StringComparison.Ordinal) && !name.StartsWith("stats-", StringComparison.Ordinal) && name != "irmap-cache")
                continue; // logs and other files that are not images
            try
            {
                using var reader = CriuImageReader.Open(file);
                foreach (var _ in reader.ReadAllRaw())
                {
                }
                ok.Add(name);
            }
            catch (CriuImageException e)
            {
                problems.Add(e.Message);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                problems.Add($"{file}: {e.Message}");
            }
        }
        return ok;
    }

    private void CheckProcesses(List<string> problems, HashSet<string> parsed)
    {
        List<file_entry>? files = parsed.Contains(ImageKinds.Files.FileName) ? [.. dir.All<file_entry>(ImageKinds.Files)] : null;
        var fileTypes = files?.GroupBy(f => f.Id).ToDictionary(g => g.Key, g => g.First().Type);
        var pids = new HashSet<uint>();
        foreach (var p in dir.Tree)
        {
            if (!pids.Add(p.Pid))
                problems.Add($"{dir.FileOf(ImageKinds.Pstree)}: pid {p.Pid} is listed twice");
            if (p.Ppid != 0 && dir.Tree.All(q => q.Pid != p.Ppid))
                problems.Add($"{dir.FileOf(ImageKinds.Pstree)}: pid {p.Pid} has parent {p.Ppid}, which is not in the tree");
            foreach (var kind in new[] { ImageKinds.Ids, ImageKinds.Mm, ImageKinds.Fs, ImageKinds.Pagemap })
            {
                if (!parsed.Contains(kind.FileNameFor(p.Pid)))
                    problems.Add($"{dir.FileOf(kind, p.Pid)}: missing (or unreadable) for pid {p.Pid}");
            }
            var threads = p.Threads.Count > 0 ? p.Threads : [p.Pid];
            foreach (var tid in threads)
            {
                if (!parsed.Contains(ImageKinds.Core.FileNameFor(tid)))
                    problems.Add($"{dir.FileOf(ImageKinds.Core, tid)}: missing (or unreadable) for thread {tid} of pid {p.Pid}");
            }
            if (!parsed.Contains(ImageKinds.Ids.FileNameFor(p.Pid)))
                continue;
            var ids = dir.One<task_kobj_ids_entry>(ImageKinds.Ids, p.Pid);
            string fdinfo = ImageKinds.Fdinfo.FileNameFor(ids.FilesId);
            if (!parsed.Contains(fdinfo))
            {
                problems.Add($"{dir.FileOf(ImageKinds.Fdinfo, ids.FilesId)}: missing (or unreadable): the descriptors of pid {p.Pid}");
                continue;
            }
            foreach (var fd in dir.All<fdinfo_entry>(ImageKinds.Fdinfo, ids.FilesId))
            {
                if (fileTypes is null)
                    problems.Add($"{dir.FileOf(ImageKinds.Fdinfo, ids.FilesId)}: fd {fd.Fd} of pid {p.Pid} points to file {fd.Id}, but there is no files.img");
                else if (!fileTypes.TryGetValue(fd.Id, out var type))
                    problems.Add($"{dir.FileOf(ImageKinds.Fdinfo, ids.FilesId)}: fd {fd.Fd} of pid {p.Pid} points to file {fd.Id}, which files.img does not have");
                else if (type != fd.Type)
                    problems.Add($"{dir.FileOf(ImageKinds.Fdinfo, ids.FilesId)}: fd {fd.Fd} of pid {p.Pid} is {fd.Type.OriginalName()} but file {fd.Id} is {type.OriginalName()}");
            }
        }
    }

    /// <summary>The pages each pagemap says are present add up to its pages-N.img, and no pages file is left over.</summary>
    private void CheckPages(List<string> problems, HashSet<string> parsed)
    {
        var expected = new Dictionary<uint, (long Bytes, List<string> From)>();
        foreach (var name in parsed.Where(n => n.StartsWith("pagemap-", StringComparison.Ordinal)))
        {
            string file = Path.Combine(dir.Path, name);
            using var reader = CriuImageReader.Open(file, ImageKinds.Pagemap);
            var head = reader.Read<pagemap_head>()!;
            long bytes = 0;
            ulong lastEnd = 0;
            foreach (var e in reader.ReadAll<pagemap_entry>())
            {
                ulong pages = e.HasNrPages ? e.NrPages : e.CompatNrPages;
                if (e.Vaddr % PageSize != 0)
                    problems.Add($"{file}: entry at 0x{e.Vaddr:x} is not page-aligned");
                if (e.Vaddr < lastEnd)
                    problems.Add($"{file}: entry at 0x{e.Vaddr:x} overlaps or precedes the one before it (which ends at 0x{lastEnd:x})");
                lastEnd = e.Vaddr + pages * PageSize;
                bool present = e.HasFlags ? (e.Flags & PePresent) != 0 : !(e.HasInParent && e.InParent);
                if (present)
                    bytes += (long)pages * PageSize;
            }
            var sum = expected.GetValueOrDefault(head.PagesId, (0, []));
            sum.From.Add(name);
            expected[head.PagesId] = (sum.Bytes + bytes, sum.From);
        }
        foreach (var (id, (bytes, from)) in expected)
        {
            string pages = Path.Combine(dir.Path, $"pages-{id}.img");
            long actual = File.Exists(pages) ? new FileInfo(pages).Length : -1;
            if (actual < 0 && bytes > 0)
                problems.Add($"{pages}: missing: {string.Join(", ", from)} list {bytes} bytes of pages in it");
            else if (actual >= 0 && actual != bytes)
                problems.Add($"{pages}: {actual} bytes, but {string.Join(", ", from)} list {bytes} bytes of present pages");
        }
        foreach (var pages in Directory.GetFiles(dir.Path, "pages-*.img"))
        {
            string n = Path.GetFileName(pages)[6..^4];
            if (uint.TryParse(n, out uint id) && !expected.ContainsKey(id))
                problems.Add($"{pages}: no pagemap refers to it");
        }
    }
}
