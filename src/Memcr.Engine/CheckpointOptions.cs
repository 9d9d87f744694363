using Memcr.Image;
using Memcr.Linux.Memory;

namespace Memcr.Engine;

/// <summary>What to checkpoint and how (the single-process options of the memcr command line).</summary>
public sealed record CheckpointOptions
{
    public required int Pid { get; init; }

    /// <summary>Directory of the image file (memcr -d); /tmp by default.</summary>
    public string DumpDir { get; init; } = "/tmp";

    /// <summary>Read pages through /proc/PID/mem instead of process_vm_readv (memcr -m).</summary>
    public bool UseProcMem { get; init; }

    /// <summary>Also save written pages of private file mappings and drop those mappings' pages (memcr -f).</summary>
    public bool IncludeFileMappings { get; init; }

    /// <summary>Leave the image in the page cache instead of writing it back and evicting it.</summary>
    public bool KeepImageCached { get; init; }

    /// <summary>Codec of page records (memcr -z): none, lz4 or zstd.</summary>
    public Codec Codec { get; init; }

    /// <summary>
    /// memcr -c: a whole-image digest in the image, checked at restore, and every page read back
    /// from the target after it is written and compared with its checksum.
    /// </summary>
    public bool Checksum { get; init; }

    /// <summary>Encryption of page records (memcr -e).</summary>
    public Encryption Encryption { get; init; }

    /// <summary>Key for <see cref="Encryption"/> (from a key file); null: a random key that lives only in this process.</summary>
    public byte[]? Key { get; init; }

    /// <summary>
    /// Called once the image is complete and checked, just before the target is held in a group
    /// stop and its memory dropped (the service writes its journal here). If it throws, the
    /// checkpoint is abandoned and the target left running untouched.
    /// </summary>
    public Action<CheckpointSession>? BeforeDrop { get; init; }

    /// <summary>
    /// The memory budget the checkpoint's and the restore's I/O buffers are granted from (memcr
    /// --buffer-budget; a service shares one among all its operations); null: a budget of
    /// <see cref="MemoryBudget.DefaultBytes"/> for this process alone.
    /// </summary>
    public MemoryBudget? Budget { get; init; }

    /// <summary>
    /// memcr --incremental: the image is kept after the restore and the process's writes tracked,
    /// so that its next checkpoint saves only the pages it wrote (an image over the kept one).
    /// </summary>
    public bool Incremental { get; init; }

    /// <summary>How the restore brings pages back (memcr --lazy).</summary>
    public LazyMode Lazy { get; init; }

    /// <summary>Threads used to compress and encrypt pages at checkpoint.</summary>
    public int EncodeThreads { get; init; } = Math.Max(1, Math.Min(Environment.ProcessorCount, 8));

    /// <summary>Threads used to verify and write back pages at restore.</summary>
    public int Parallelism { get; init; } = Math.Max(1, Math.Min(Environment.ProcessorCount, 4));

    public string ImagePath => Path.Combine(DumpDir, $"pages-{Pid}.img");
}

/// <summary>How a restore brings pages back.</summary>
public enum LazyMode
{
    /// <summary>All pages written before the process runs.</summary>
    Off,

    /// <summary>The process runs at once; pages on demand (refused where unavailable).</summary>
    On,

    /// <summary>Lazily where it can be, eagerly where it cannot.</summary>
    Auto,
}
