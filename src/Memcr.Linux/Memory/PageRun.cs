namespace Memcr.Linux.Memory;

[Flags]
public enum PageState
{
    None = 0,
    Present = 1,
    Swapped = 2,

    /// <summary>A page of the page cache (a clean page of a file mapping), not a private anonymous one.</summary>
    File = 4,

    /// <summary>
    /// Written since it was last write-protected by a userfaultfd in async write-protect mode (or
    /// never protected: every page of a mapping nothing tracks). Reported only by <see cref="PagemapScanner.ScanWrites"/>.
    /// </summary>
    Written = 8,

    /// <summary>Under a mapping whose writes a userfaultfd tracks (async write-protect). Reported only by <see cref="PagemapScanner.ScanWrites"/>.</summary>
    Tracked = 16,
}

/// <summary>A run of pages [Start, End) that share one state.</summary>
public readonly record struct PageRun(ulong Start, ulong End, PageState State)
{
    public ulong Length => End - Start;
}
