using Google.Protobuf.Reflection;

namespace Memcr.CriuImages;

/// <summary>The leading magic numbers of CRIU images (criu/include/magic.h).</summary>
public static class ImageMagic
{
    /// <summary>First word of every image but inventory.img ("Sarov").</summary>
    public const uint Common = 0x54564319;

    /// <summary>First word of service files: stats, irmap cache ("Zlatoust").</summary>
    public const uint Service = 0x55105940;

    public const uint Inventory = 0x58313116;
}

/// <summary>Every image kind CRIU 4.2 writes (for any architecture), by name and by magic.</summary>
public static class ImageKinds
{
    private static ImageKind K(string name, uint magic, string file, MessageDescriptor entry, ImageLayout layout = ImageLayout.Entries,
        ExtraPayload extra = ExtraPayload.None, bool service = false, bool crit = true) =>
        new(name, magic, file, entry, layout, extra, service, crit);

    public static readonly ImageKind Inventory = K("INVENTORY", ImageMagic.Inventory, "inventory.img", inventory_entry.Descriptor);
    public static readonly ImageKind Pstree = K("PSTREE", 0x50273030, "pstree.img", pstree_entry.Descriptor);
    public static readonly ImageKind Fdinfo = K("FDINFO", 0x56213732, "fdinfo-{0}.img", fdinfo_entry.Descriptor);
    public static readonly ImageKind Pagemap = K("PAGEMAP", 0x56084025, "pagemap-{0}.img", pagemap_entry.Descriptor, ImageLayout.Pagemap);
    public static readonly ImageKind Core = K("CORE", 0x55053847, "core-{0}.img", core_entry.Descriptor);
    public static readonly ImageKind Ids = K("IDS", 0x54432030, "ids-{0}.img", task_kobj_ids_entry.Descriptor);
    public static readonly ImageKind Vmas = K("VMAS", 0x54123737, "vmas-{0}.img", vma_entry.Descriptor);
    public static readonly ImageKind Pipes = K("PIPES", 0x56513555, "pipes.img", pipe_entry.Descriptor);
    public static readonly ImageKind PipesData = K("PIPES_DATA", 0x56453709, "pipes-data.img", pipe_data_entry.Descriptor, extra: ExtraPayload.PipeData);
    public static readonly ImageKind Fifo = K("FIFO", 0x58364939, "fifo.img", fifo_entry.Descriptor);
    public static readonly ImageKind FifoData = K("FIFO_DATA", 0x59333054, "fifo-data.img", pipe_data_entry.Descriptor, extra: ExtraPayload.PipeData);
    public static readonly ImageKind Sigact = K("SIGACT", 0x55344201, "sigacts-{0}.img", sa_entry.Descriptor);
    public static readonly ImageKind UnixSk = K("UNIXSK", 0x54373943, "unixsk.img", unix_sk_entry.Descriptor);
    public static readonly ImageKind InetSk = K("INETSK", 0x56443851, "inetsk.img", inet_sk_entry.Descriptor);
    public static readonly ImageKind PacketSk = K("PACKETSK", 0x60454618, "packetsk.img", packet_sock_entry.Descriptor);
    public static readonly ImageKind Itimers = K("ITIMERS", 0x57464056, "itimers-{0}.img", itimer_entry.Descriptor);
    public static readonly ImageKind PosixTimers = K("POSIX_TIMERS", 0x52603957, "posix-timers-{0}.img", posix_timer_entry.Descriptor);
    public static readonly ImageKind SkQueues = K("SK_QUEUES", 0x56264026, "sk-queues.img", sk_packet_entry.Descriptor, extra: ExtraPayload.SocketQueue);
    public static readonly ImageKind Utsns = K("UTSNS", 0x54473203, "utsns-{0}.img", utsns_entry.Descriptor);
    public static readonly ImageKind Creds = K("CREDS", 0x54023547, "creds-{0}.img", creds_entry.Descriptor);
    public static readonly ImageKind IpcVar = K("IPC_VAR", 0x53115007, "ipcns-var-{0}.img", ipc_var_entry.Descriptor);
    public static readonly ImageKind IpcnsShm = K("IPCNS_SHM", 0x46283044, "ipcns-shm-{0}.img", ipc_shm_entry.Descriptor, extra: ExtraPayload.SharedMemory);
    public static readonly ImageKind IpcnsMsg = K("IPCNS_MSG", 0x55453737, "ipcns-msg-{0}.img", ipc_msg_entry.Descriptor, extra: ExtraPayload.MessageQueue);
    public static readonly ImageKind IpcnsSem = K("IPCNS_SEM", 0x59573019, "ipcns-sem-{0}.img", ipc_sem_entry.Descriptor, extra: ExtraPayload.SemaphoreSet);
    public static readonly ImageKind RegFiles = K("REG_FILES", 0x50363636, "reg-files.img", reg_file_entry.Descriptor);
    public static readonly ImageKind ExtFiles = K("EXT_FILES", 0x59255641, "ext-files.img", ext_file_entry.Descriptor);
    public static readonly ImageKind Fs = K("FS", 0x51403912, "fs-{0}.img", fs_entry.Descriptor);
    public static readonly ImageKind Mm = K("MM", 0x57492820, "mm-{0}.img", mm_entry.Descriptor);
    public static readonly ImageKind RemapFpath = K("REMAP_FPATH", 0x59133954, "remap-fpath.img", remap_file_path_entry.Descriptor);
    public static readonly ImageKind GhostFile = K("GHOST_FILE", 0x52583605, "ghost-file-{0}.img", ghost_file_entry.Descriptor, ImageLayout.GhostFile);
    public static readonly ImageKind TcpStream = K("TCP_STREAM", 0x51465506, "tcp-stream-{0}.img", tcp_stream_entry.Descriptor, extra: ExtraPayload.TcpQueues);
    public static readonly ImageKind EventfdFile = K("EVENTFD_FILE", 0x44523722, "eventfd.img", eventfd_file_entry.Descriptor);
    public static readonly ImageKind EventpollFile = K("EVENTPOLL_FILE", 0x45023858, "eventpoll.img", eventpoll_file_entry.Descriptor);
    public static readonly ImageKind EventpollTfd = K("EVENTPOLL_TFD", 0x44433746, "eventpoll-tfd.img", eventpoll_tfd_entry.Descriptor);
    public static readonly ImageKind Signalfd = K("SIGNALFD", 0x57323820, "signalfd.img", signalfd_entry.Descriptor);
    public static readonly ImageKind InotifyFile = K("INOTIFY_FILE", 0x48424431, "inotify.img", inotify_file_entry.Descriptor);
    public static readonly ImageKind InotifyWd = K("INOTIFY_WD", 0x54562009, "inotify-wd.img", inotify_wd_entry.Descriptor);
    public static readonly ImageKind Mnts = K("MNTS", 0x55563928, "mountpoints-{0}.img", mnt_entry.Descriptor);
    public static readonly ImageKind Netdev = K("NETDEV", 0x57373951, "netdev-{0}.img", net_device_entry.Descriptor);
    public static readonly ImageKind Netns = K("NETNS", 0x55933752, "netns-{0}.img", netns_entry.Descriptor);
    public static readonly ImageKind TtyFiles = K("TTY_FILES", 0x59433025, "tty.img", tty_file_entry.Descriptor);
    public static readonly ImageKind TtyInfo = K("TTY_INFO", 0x59453036, "tty-info.img", tty_info_entry.Descriptor);
    public static readonly ImageKind TtyData = K("TTY_DATA", 0x59413026, "tty-data.img", tty_data_entry.Descriptor);
    public static readonly ImageKind FileLocks = K("FILE_LOCKS", 0x54323616, "filelocks.img", file_lock_entry.Descriptor);
    public static readonly ImageKind Rlimit = K("RLIMIT", 0x57113925, "rlimit-{0}.img", rlimit_entry.Descriptor);
    public static readonly ImageKind FanotifyFile = K("FANOTIFY_FILE", 0x55096122, "fanotify.img", fanotify_file_entry.Descriptor);
    public static readonly ImageKind FanotifyMark = K("FANOTIFY_MARK", 0x56506035, "fanotify-mark.img", fanotify_mark_entry.Descriptor);
    public static readonly ImageKind Signal = K("SIGNAL", 0x59255647, "signal-s-{0}.img", siginfo_entry.Descriptor, crit: false);
    public static readonly ImageKind NetlinkSk = K("NETLINK_SK", 0x58005614, "netlinksk.img", netlink_sk_entry.Descriptor);
    public static readonly ImageKind NsFiles = K("NS_FILES", 0x61394011, "ns-files.img", ns_file_entry.Descriptor);
    public static readonly ImageKind Tunfile = K("TUNFILE", 0x57143751, "tunfile.img", tunfile_entry.Descriptor);
    public static readonly ImageKind Cgroup = K("CGROUP", 0x59383330, "cgroup.img", cgroup_entry.Descriptor);
    public static readonly ImageKind Timerfd = K("TIMERFD", 0x50493712, "timerfd.img", timerfd_entry.Descriptor);
    public static readonly ImageKind Cpuinfo = K("CPUINFO", 0x61404013, "cpuinfo.img", cpuinfo_entry.Descriptor);
    public static readonly ImageKind Userns = K("USERNS", 0x55474906, "userns-{0}.img", userns_entry.Descriptor);
    public static readonly ImageKind Seccomp = K("SECCOMP", 0x64413049, "seccomp.img", seccomp_entry.Descriptor);
    public static readonly ImageKind BinfmtMisc = K("BINFMT_MISC", 0x67343323, "binfmt-misc.img", binfmt_misc_entry.Descriptor, crit: false);
    public static readonly ImageKind Autofs = K("AUTOFS", 0x49353943, "autofs-{0}.img", autofs_entry.Descriptor);
    public static readonly ImageKind Files = K("FILES", 0x56303138, "files.img", file_entry.Descriptor);
    public static readonly ImageKind MemfdInode = K("MEMFD_INODE", 0x48453499, "memfd.img", memfd_inode_entry.Descriptor);
    public static readonly ImageKind Timens = K("TIMENS", 0x43114433, "timens-{0}.img", timens_entry.Descriptor);
    public static readonly ImageKind Pidns = K("PIDNS", 0x61157326, "pidns-{0}.img", pidns_entry.Descriptor);
    public static readonly ImageKind BpfmapFile = K("BPFMAP_FILE", 0x57506142, "bpfmap-file.img", bpfmap_file_entry.Descriptor);
    public static readonly ImageKind BpfmapData = K("BPFMAP_DATA", 0x64324033, "bpfmap-data.img", bpfmap_data_entry.Descriptor, extra: ExtraPayload.BpfMapData);
    public static readonly ImageKind Apparmor = K("APPARMOR", 0x59423047, "apparmor.img", apparmor_entry.Descriptor);
    public static readonly ImageKind Pidfd = K("PIDFD", 0x54435556, "pidfd.img", pidfd_entry.Descriptor, crit: false);
    public static readonly ImageKind Stats = K("STATS", 0x57093306, "stats-{0}", stats_entry.Descriptor, service: true);
    public static readonly ImageKind IrmapCache = K("IRMAP_CACHE", 0x57004059, "irmap-cache", irmap_cache_entry.Descriptor, service: true);

    /// <summary>Every kind, in magic.h's order.</summary>
    public static IReadOnlyList<ImageKind> All { get; } =
    [
        Inventory, Pstree, Fdinfo, Pagemap, Core, Ids, Vmas, Pipes, PipesData, Fifo, FifoData, Sigact, UnixSk, InetSk,
        PacketSk, Itimers, PosixTimers, SkQueues, Utsns, Creds, IpcVar, IpcnsShm, IpcnsMsg, IpcnsSem, RegFiles, ExtFiles,
        Fs, Mm, RemapFpath, GhostFile, TcpStream, EventfdFile, EventpollFile, EventpollTfd, Signalfd, InotifyFile,
        InotifyWd, Mnts, Netdev, Netns, TtyFiles, TtyInfo, TtyData, FileLocks, Rlimit, FanotifyFile, FanotifyMark, Signal,
        NetlinkSk, NsFiles, Tunfile, Cgroup, Timerfd, Cpuinfo, Userns, Seccomp, BinfmtMisc, Autofs, Files, MemfdInode,
        Timens, Pidns, BpfmapFile, BpfmapData, Apparmor, Pidfd, Stats, IrmapCache,
    ];

    private static readonly Dictionary<uint, ImageKind> ByMagicTable = All.ToDictionary(k => k.Magic);
    private static readonly Dictionary<string, ImageKind> ByNameTable = All.ToDictionary(k => k.Name, StringComparer.Ordinal);

    /// <summary>
    /// Magics CRIU defines that are not images of entries: the kerndat cache, the image set
    /// versions. Named in errors so that such a file is told apart from a foreign one.
    /// </summary>
    private static readonly Dictionary<uint, string> OtherMagics = new()
    {
        [0x57023458] = "KDAT (CRIU's kernel feature cache, not an image)",
        [ImageMagic.Common] = "IMG_COMMON (the common magic alone: the image's own magic is missing)",
        [ImageMagic.Service] = "IMG_SERVICE (the service magic alone: the image's own magic is missing)",
    };

    public static ImageKind? ByMagic(uint magic) => ByMagicTable.GetValueOrDefault(magic);

    public static ImageKind? ByName(string name) => ByNameTable.GetValueOrDefault(name);

    /// <summary>What a magic is, for an error message: a kind's name, a non-image magic, or "unknown".</summary>
    public static string Describe(uint magic) =>
        ByMagic(magic)?.Name ?? OtherMagics.GetValueOrDefault(magic)
        ?? "not a magic of CRIU's: raw data such as pages-N.img has no magic (and cannot be decoded), or this is not a CRIU image";
}
