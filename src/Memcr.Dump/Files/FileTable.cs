using Memcr.CriuImages;
using Memcr.Linux.Kernel;

namespace Memcr.Dump.Files;

/// <summary>
/// files.img as a dump builds it: one file_entry per open file description (dup'ed descriptors and
/// those a child inherited share one), and per file that is mapped, executed or a working or root
/// directory; with the images that go with some kinds (pipe contents, terminals).
/// </summary>
internal sealed class FileTable
{
    private readonly Dictionary<(string Path, uint Flags), uint> _paths = [];
    private readonly List<(int Pid, int Fd, ulong Dev, ulong Inode, uint Id)> _descriptions = [];
    private readonly HashSet<uint> _pipesDumped = [];
    private readonly Dictionary<uint, uint> _ttys = [];
    private uint _next = 1;

    public List<file_entry> Entries { get; } = [];

    public List<(pipe_data_entry Entry, byte[] Data)> PipeData { get; } = [];

    public List<(pipe_data_entry Entry, byte[] Data)> FifoData { get; } = [];

    /// <summary>memfd (and shared anonymous memory) inodes: their memfd.img entry and an open descriptor to read their contents from.</summary>
    public List<(memfd_inode_entry Entry, Microsoft.Win32.SafeHandles.SafeFileHandle File)> MemfdInodes { get; } = [];

    private readonly Dictionary<(ulong Dev, ulong Inode), uint> _memfdInodes = [];
    private readonly Dictionary<(ulong Dev, ulong Inode), uint> _memfdMappings = [];

    public List<tty_info_entry> TtyInfos { get; } = [];

    /// <summary>filelocks.img: every lock once, however many descriptors show it.</summary>
    public List<file_lock_entry> Locks { get; } = [];

    private readonly HashSet<(uint File, uint Kind, uint Type, long Start, long Len, int Owner)> _locks = [];

    /// <summary>
    /// Adds <paramref name="l"/>, held through file description <paramref name="file"/>, unless a
    /// descriptor seen before showed it: a dup'ed or inherited descriptor shows its description's
    /// flock and OFD locks, and a dup'ed one its process's POSIX locks.
    /// </summary>
    public void AddLock(uint file, file_lock_entry l)
    {
        if (_locks.Add((file, l.Flag, l.Type, l.Start, l.Len, l.Flag == FileLocks.Posix ? l.Pid : 0)))
            Locks.Add(l);
    }

    public uint NewId() => _next++;

    /// <summary>fown_entry of a file with no owner: every field set (they are required).</summary>
    public static fown_entry NoOwner() => new() { Uid = 0, Euid = 0, Signum = 0, PidType = 0, Pid = 0 };

    /// <summary>
    /// A regular file that is not an open descriptor (a mapping, the executable, the working or
    /// root directory): one entry per path. <paramref name="open"/> gives its contents, for the
    /// build-id of an ELF file.
    /// </summary>
    public uint PathEntry(string path, FileStatus st, Func<Stream?>? open = null)
    {
        if (_paths.TryGetValue((path, 0), out uint known))
            return known;
        uint id = NewId();
        Entries.Add(new file_entry { Type = fd_types.Reg, Id = id, Reg = RegEntry(id, path, st, 0, 0, FileTable.NoOwner(), open) });
        _paths[(path, 0)] = id;
        return id;
    }

    /// <summary>reg_file_entry as CRIU writes it: size and (for ELF files) build-id of a regular file, to check at restore.</summary>
    public static reg_file_entry RegEntry(uint id, string path, FileStatus st, uint flags, ulong pos, fown_entry fown, Func<Stream?>? open)
    {
        var reg = new reg_file_entry { Id = id, Flags = flags, Pos = pos, Fown = fown, Name = path, Mode = st.Mode };
        // A file opened O_WRONLY|O_APPEND (a log) grows on: its size proves nothing (as CRIU).
        bool appendOnly = (flags & 3) == 1 && (flags & 0x400) != 0;
        if (st.IsRegular && !appendOnly)
        {
            reg.Size = (ulong)st.Size;
            using var stream = open?.Invoke();
            if (stream is not null && ElfBuildId.Read(stream) is { } buildId)
                reg.BuildId.AddRange(buildId);
        }
        return reg;
    }

    /// <summary>The id of an open file description an earlier descriptor already has (kcmp(KCMP_FILE)), or null.</summary>
    public uint? SharedDescription(int pid, int fd, FileStatus st)
    {
        foreach (var d in _descriptions)
        {
            if (d.Dev == st.Dev && d.Inode == st.Inode && ProcessCalls.SameFile(d.Pid, d.Fd, pid, fd))
                return d.Id;
        }
        return null;
    }

    public void Remember(int pid, int fd, FileStatus st, uint id) => _descriptions.Add((pid, fd, st.Dev, st.Inode, id));

    /// <summary>Whether the contents of pipe <paramref name="pipeId"/> were taken already (a pipe has them once).</summary>
    public bool PipeSeen(uint pipeId) => !_pipesDumped.Add(pipeId);

    /// <summary>
    /// The memfd.img inode id of a memfd (or a shared anonymous mapping's shmem file); the first
    /// time, its entry, with <paramref name="open"/> giving a descriptor to read its contents.
    /// </summary>
    public uint MemfdInode(FileStatus st, string name, Func<Microsoft.Win32.SafeHandles.SafeFileHandle> open)
    {
        if (_memfdInodes.TryGetValue((st.Dev, st.Inode), out uint known))
            return known;
        uint id = (uint)_memfdInodes.Count + 1;
        var file = open();
        var entry = new memfd_inode_entry
        {
            Name = name, Uid = st.Uid, Gid = st.Gid, Size = (ulong)st.Size, Shmid = (uint)st.Inode,
            Seals = (uint)FileCalls.Seals(file), InodeId = id, Mode = st.Mode,
        };
        MemfdInodes.Add((entry, file));
        _memfdInodes[(st.Dev, st.Inode)] = id;
        return id;
    }

    /// <summary>
    /// The MEMFD file entry that the mappings of a memfd (or of shared anonymous memory) name in
    /// their shmid: one per inode, read-write, as some of its mappings may be.
    /// </summary>
    public uint MemfdMapping(FileStatus st, string name, Func<Microsoft.Win32.SafeHandles.SafeFileHandle> open)
    {
        if (_memfdMappings.TryGetValue((st.Dev, st.Inode), out uint known))
            return known;
        uint inode = MemfdInode(st, name, open);
        uint id = NewId();
        Entries.Add(new file_entry
        {
            Type = fd_types.Memfd,
            Id = id,
            Memfd = new memfd_file_entry { Id = id, Flags = 2, Pos = 0, Fown = NoOwner(), InodeId = inode },
        });
        _memfdMappings[(st.Dev, st.Inode)] = id;
        return id;
    }

    /// <summary>The tty_info id of a terminal (by its rdev), and whether it is new.</summary>
    public (uint Id, bool New) Tty(uint rdev, uint index)
    {
        if (_ttys.TryGetValue(rdev, out uint id))
            return (id, false);
        // CRIU's tty id: the index twice, the master odd.
        id = index << 1;
        _ttys[rdev] = id;
        return (id, true);
    }
}
