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

    /// <summary>Threads used to verify and write back pages at restore.</summary>
    public int Parallelism { get; init; } = Math.Max(1, Math.Min(Environment.ProcessorCount, 4));

    public string ImagePath => Path.Combine(DumpDir, $"pages-{Pid}.img");
}
