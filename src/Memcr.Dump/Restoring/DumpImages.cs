using Memcr.CriuImages;
using Memcr.CriuImages.Explore;
using Memcr.CriuImages.Pages;
using Memcr.Linux.Kernel;

namespace Memcr.Dump.Restoring;

/// <summary>One process of a dump: its tree entry and its images (pages stay in pages-N.img).</summary>
internal sealed class ProcessImages
{
    public required pstree_entry Tree { get; init; }

    public required Dictionary<uint, core_entry> Cores { get; init; }

    public required task_kobj_ids_entry Ids { get; init; }

    public required mm_entry Mm { get; init; }

    public required fs_entry Fs { get; init; }

    public required List<fdinfo_entry> Fds { get; init; }

    public required PageMap Pages { get; init; }

    public int Pid => (int)Tree.Pid;

    public core_entry Leader => Cores[Tree.Pid];

    public IEnumerable<uint> Threads => Tree.Threads.Count > 0 ? Tree.Threads : [Tree.Pid];

    public List<ProcessImages> Children { get; } = [];
}

/// <summary>
/// The images of a dump directory that a restore needs, read and checked for consistency before
/// anything is made: the tree (parents before children), each process's core, ids, mm, fs,
/// descriptors and pagemap, and the files, pipe contents and terminals.
/// </summary>
internal sealed class DumpImages
{
    private DumpImages(string dir, List<ProcessImages> processes, Dictionary<uint, file_entry> files, Dictionary<uint, byte[]> pipeData,
        Dictionary<uint, pipe_data_entry> pipeInfo, Dictionary<uint, tty_info_entry> ttys)
    {
        FifoData = [];
        FifoInfo = [];
        MemfdInodes = [];
        Dir = dir;
        Processes = processes;
        Files = files;
        PipeData = pipeData;
        PipeInfo = pipeInfo;
        Ttys = ttys;
    }

    public string Dir { get; }

    /// <summary>inventory.img: the dump's run id (its network lock is named after it) and lock method.</summary>
    public inventory_entry Inventory { get; private set; } = new();

    /// <summary>Every process, the root first, parents before their children.</summary>
    public List<ProcessImages> Processes { get; }

    public ProcessImages Root => Processes[0];

    public Dictionary<uint, file_entry> Files { get; }

    /// <summary>Unread bytes of each pipe (by pipe_id), and its buffer size.</summary>
    public Dictionary<uint, byte[]> PipeData { get; }

    public Dictionary<uint, pipe_data_entry> PipeInfo { get; }

    public Dictionary<uint, tty_info_entry> Ttys { get; }

    /// <summary>Unread bytes of each FIFO (by pipe_id), and its buffer size.</summary>
    public Dictionary<uint, byte[]> FifoData { get; }

    public Dictionary<uint, pipe_data_entry> FifoInfo { get; }

    /// <summary>memfd.img: memfd inodes (and shared anonymous memory) by inode id.</summary>
    public Dictionary<uint, memfd_inode_entry> MemfdInodes { get; }

    /// <summary>sk-queues.img: the messages queued on UNIX sockets (by the socket's file id), in queue order.</summary>
    public List<(sk_packet_entry Entry, byte[] Data)> SkQueues { get; } = [];

    /// <summary>filelocks.img: the locks each process takes again once its descriptors are in place.</summary>
    public List<file_lock_entry> Locks { get; } = [];

    /// <summary>The pagemap of a memfd inode's contents (offsets in the file as addresses).</summary>
    public PageMap SharedPages(memfd_inode_entry inode) => PageMap.Read(Path.Combine(Dir, $"pagemap-shmem-{inode.Shmid}.img"));

    public static DumpImages Read(string dir)
    {
        if (!Directory.Exists(dir))
            throw new CriuModeException($"images directory {dir} does not exist");
        var d = new DumpDirectory(dir);
        try
        {
            Need(d, ImageKinds.Inventory);
            var inventories = d.All<inventory_entry>(ImageKinds.Inventory);
            var inventory = inventories.Count > 0 ? inventories[0] : throw new CriuModeException($"{d.FileOf(ImageKinds.Inventory)}: no entry");
            if (inventory.ImgVersion != 2)
                throw new CriuModeException($"{d.FileOf(ImageKinds.Inventory)}: image version {inventory.ImgVersion}, memcr reads version 2 (CRIU 3.0 and later)");
            Need(d, ImageKinds.Pstree);
            var processes = new List<ProcessImages>();
            foreach (var p in d.Tree)
            {
                uint pid = p.Pid;
                var ids = d.One<task_kobj_ids_entry>(ImageKinds.Ids, pid);
                var threads = p.Threads.Count > 0 ? p.Threads : [pid];
                var cores = threads.ToDictionary(t => t, t => d.One<core_entry>(ImageKinds.Core, t));
                var fds = d.Has(ImageKinds.Fdinfo, ids.FilesId) ? d.All<fdinfo_entry>(ImageKinds.Fdinfo, ids.FilesId).ToList() : [];
                processes.Add(new ProcessImages
                {
                    Tree = p,
                    Cores = cores,
                    Ids = ids,
                    Mm = d.One<mm_entry>(ImageKinds.Mm, pid),
                    Fs = d.One<fs_entry>(ImageKinds.Fs, pid),
                    Fds = fds,
                    Pages = PageMap.Read(dir, pid),
                });
            }
            if (processes.Count == 0 || processes[0].Tree.Ppid != 0)
                throw new CriuModeException($"{d.FileOf(ImageKinds.Pstree)}: the first process must be the root (ppid 0)");
            var byPid = new Dictionary<uint, ProcessImages>();
            foreach (var p in processes)
            {
                if (p.Tree.Ppid != 0)
                {
                    if (!byPid.TryGetValue(p.Tree.Ppid, out var parent))
                        throw new CriuModeException($"{d.FileOf(ImageKinds.Pstree)}: pid {p.Pid}'s parent {p.Tree.Ppid} does not come before it in the tree");
                    parent.Children.Add(p);
                }
                if (!byPid.TryAdd(p.Tree.Pid, p))
                    throw new CriuModeException($"{d.FileOf(ImageKinds.Pstree)}: pid {p.Pid} is listed twice");
            }
            var files = d.Has(ImageKinds.Files) ? d.All<file_entry>(ImageKinds.Files).ToDictionary(f => f.Id) : [];
            var pipeData = new Dictionary<uint, byte[]>();
            var pipeInfo = new Dictionary<uint, pipe_data_entry>();
            if (d.Has(ImageKinds.PipesData))
            {
                using var r = CriuImageReader.Open(d.FileOf(ImageKinds.PipesData), ImageKinds.PipesData);
                foreach (var e in r.ReadAllRaw())
                {
                    var entry = (pipe_data_entry)e.Message;
                    pipeData[entry.PipeId] = e.Extra;
                    pipeInfo[entry.PipeId] = entry;
                }
            }
            var ttys = d.Has(ImageKinds.TtyInfo) ? d.All<tty_info_entry>(ImageKinds.TtyInfo).ToDictionary(t => t.Id) : [];
            var images = new DumpImages(dir, processes, files, pipeData, pipeInfo, ttys) { Inventory = inventory };
            if (d.Has(ImageKinds.FifoData))
            {
                using var r = CriuImageReader.Open(d.FileOf(ImageKinds.FifoData), ImageKinds.FifoData);
                foreach (var e in r.ReadAllRaw())
                {
                    var entry = (pipe_data_entry)e.Message;
                    images.FifoData[entry.PipeId] = e.Extra;
                    images.FifoInfo[entry.PipeId] = entry;
                }
            }
            if (d.Has(ImageKinds.MemfdInode))
            {
                foreach (var m in d.All<memfd_inode_entry>(ImageKinds.MemfdInode))
                    images.MemfdInodes[(uint)m.InodeId] = m;
            }
            if (d.Has(ImageKinds.SkQueues))
            {
                using var r = CriuImageReader.Open(d.FileOf(ImageKinds.SkQueues), ImageKinds.SkQueues);
                foreach (var e in r.ReadAllRaw())
                    images.SkQueues.Add(((sk_packet_entry)e.Message, e.Extra));
            }
            if (d.Has(ImageKinds.FileLocks))
                images.Locks.AddRange(d.All<file_lock_entry>(ImageKinds.FileLocks));
            return images;
        }
        catch (CriuImageException e)
        {
            throw new CriuModeException($"cannot restore from {dir}: {e.Message}; nothing was restored", e);
        }
        catch (FileNotFoundException e)
        {
            throw new CriuModeException($"cannot restore from {dir}: image {e.FileName} is missing; nothing was restored", e);
        }
    }

    private static void Need(DumpDirectory d, ImageKind kind)
    {
        if (!d.Has(kind))
            throw new CriuModeException($"cannot restore from {d.Path}: {kind.FileName} is missing (is this a dump directory?); nothing was restored");
    }

    /// <summary>tcp-stream-INO.img: the state of the TCP connection of socket <paramref name="inode"/> and its queued bytes.</summary>
    public TcpConnectionState TcpStream(uint inode)
    {
        string file = Path.Combine(Dir, ImageKinds.TcpStream.FileNameForHex(inode));
        if (!System.IO.File.Exists(file))
            throw new CriuModeException($"{file} is missing: the TCP connection of socket {inode:x} cannot be made again");
        try
        {
            using var r = CriuImageReader.Open(file, ImageKinds.TcpStream);
            var raw = r.ReadRaw() ?? throw new CriuModeException($"{file}: no entry");
            var e = (tcp_stream_entry)raw.Message;
            if (raw.Extra.Length < (long)e.InqLen + e.OutqLen || e.UnsqLen > e.OutqLen)
                throw new CriuModeException($"{file}: {raw.Extra.Length} bytes of queues where the entry announces {e.InqLen} received and {e.OutqLen} to send ({e.UnsqLen} unsent)");
            return new TcpConnectionState
            {
                State = InetSocketInfo.Established,
                InSeq = e.InqSeq,
                InQueue = raw.Extra[..(int)e.InqLen],
                OutSeq = e.OutqSeq,
                OutQueue = raw.Extra[(int)e.InqLen..(int)(e.InqLen + e.OutqLen)],
                Unsent = (int)e.UnsqLen,
                Options = e.OptMask,
                SendWscale = e.SndWscale,
                ReceiveWscale = e.RcvWscale,
                MssClamp = e.MssClamp,
                Timestamp = e.Timestamp,
                Window = e.HasRcvWnd ? new TcpWindow(e.SndWl1, e.SndWnd, e.MaxWindow, e.RcvWnd, e.RcvWup) : null,
            };
        }
        catch (CriuImageException ex)
        {
            throw new CriuModeException($"cannot restore from {Dir}: {ex.Message}", ex);
        }
    }

    /// <summary>Every pid and tid the tree needs.</summary>
    public IEnumerable<(uint Id, ProcessImages Process)> AllIds =>
        Processes.SelectMany(p => p.Threads.Select(t => (t, p)));

    public file_entry File(uint id, string user) =>
        Files.TryGetValue(id, out var f) ? f : throw new CriuModeException($"{Path.Combine(Dir, "files.img")} has no file {id}, which {user} needs");
}
