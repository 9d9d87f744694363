using Memcr.Dump.Dumping;
using Memcr.Linux.Arch;
using Memcr.Linux.Memory;
using Memcr.Linux.Ptrace;

namespace Memcr.Dump.Restoring;

/// <summary>What every process of a restore shares: the images, memcr's open files, the scratch address, the processes made so far.</summary>
internal sealed class RestoreContext(DumpImages images, RestorerFiles files, RestoreOptions options, CriuLog log, BufferPool buffers)
{
    public const int ScratchBytes = 64 << 10;

    /// <summary>Highest address a process can map on x86_64 (TASK_SIZE with 4-level page tables).</summary>
    public const ulong TaskSize = 0x7ffffffff000;

    public DumpImages Images => images;

    public RestorerFiles Files => files;

    public RestoreOptions Options => options;

    public CriuLog Log => log;

    public CpuArchitecture Arch { get; } = CpuArchitecture.Current;

    public PageLoader Pages { get; } = new(buffers);

    /// <summary>Epoll files whose watches are made.</summary>
    public HashSet<uint> EpollsDone { get; } = [];

    /// <summary>Every process made so far: killed if the restore fails, released together when it succeeds.</summary>
    public List<Tracer> Made { get; } = [];

    /// <summary>
    /// Where the scratch area for remote syscall arguments lives in every restored process: in no
    /// process's dumped layout, so that a child inherits its parent's and nothing is in the way.
    /// </summary>
    public ulong Scratch { get; } = FreeGap(images.Processes.SelectMany(p => p.Mm.Vmas).Select(v => (v.Start, v.End)), ScratchBytes);

    /// <summary>memcr's session and process group: a shell job's tree joins them.</summary>
    public int OurSession { get; } = Linux.Kernel.ProcessCalls.SessionOf(0);

    public int OurGroup { get; } = Linux.Kernel.ProcessCalls.GroupOf(0);

    /// <summary>The highest gap of <paramref name="size"/> bytes below TASK_SIZE that no range uses, leaving a page on each side.</summary>
    public static ulong FreeGap(IEnumerable<(ulong Start, ulong End)> used, ulong size)
    {
        const ulong Guard = 4096;
        ulong top = TaskSize - Guard;
        foreach (var (start, end) in used.Where(u => u.Start < TaskSize).OrderByDescending(u => u.Start))
        {
            if (end + Guard <= top && top - (end + Guard) >= size)
                return top - size;
            top = Math.Min(top, start > Guard ? start - Guard : 0);
        }
        if (top >= size + 0x10000)
            return top - size;
        throw new CriuModeException($"no room for a {size}-byte scratch area in the address space of the dumped processes");
    }

    public static bool IsSpecial(uint status) => (status & (MemoryDumper.Vdso | MemoryDumper.Vvar | MemoryDumper.Vsyscall)) != 0;
}
