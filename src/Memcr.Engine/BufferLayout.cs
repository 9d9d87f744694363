using Memcr.Image;
using Memcr.Linux.Memory;

namespace Memcr.Engine;

/// <summary>
/// How a checkpoint's buffers fit the share of the memory budget it was granted: reads of
/// <see cref="ReadBytes"/> into <see cref="Reads"/> buffers; for packed images also
/// <see cref="Outputs"/> buffers the <see cref="Encoders"/> encode into and the image writer's
/// staging buffer. The less granted, the smaller and fewer the buffers, down to what keeps the
/// pipeline moving.
/// </summary>
internal readonly record struct CheckpointBuffers(int ReadBytes, int Reads, int Outputs, int Encoders, int StagingBytes)
{
    private const int MiB = 1 << 20;

    /// <summary>Largest read: process_vm_readv of 4 MiB ran at full speed here.</summary>
    public const int MaxReadBytes = 4 * MiB;

    /// <summary>A record is at most this long (<see cref="ImageDump"/> cuts runs of pages into records of this size).</summary>
    public const int RecordBytes = MiB;

    /// <summary>Bytes asked of the budget: what the fastest layout takes, and the least a checkpoint can run with.</summary>
    public static (long Least, long Wanted) Ask(bool packed, int encoders, int pageSize) => packed
        ? (RecordBytes + 2 * (RecordBytes + OutputBytes(RecordBytes, pageSize)), MaxReadBytes + (encoders + 2) * (MaxReadBytes + OutputBytes(MaxReadBytes, pageSize)))
        : (2 * RecordBytes, 6 * MaxReadBytes);

    public static CheckpointBuffers For(MemoryGrant grant, bool packed, int encoders, int pageSize)
    {
        long bytes = grant.Bytes;
        if (!packed)
        {
            // Four reads in flight at most: two being written while one is read into and one waits.
            int read = WholeMiB(bytes / 4);
            return new CheckpointBuffers(read, (int)Math.Min(6, bytes / read), 0, 0, 0);
        }
        // One staging buffer, then pairs of an input and an output buffer: one pair for each
        // encoder and two more so that reading and writing go on while they encode.
        int size = WholeMiB(bytes / 8);
        int pairs = (int)Math.Min(encoders + 2, (bytes - size) / (size + OutputBytes(size, pageSize)));
        return new CheckpointBuffers(size, pairs, pairs, Math.Max(1, Math.Min(encoders, pairs - 1)), size);
    }

    /// <summary>Bytes an encoded batch of <paramref name="read"/> bytes of pages may take (each record may gain a tag).</summary>
    public static int OutputBytes(int read, int pageSize) => read + Math.Min(1024, read / pageSize) * ImageFormat.TagSize;

    private static int WholeMiB(long bytes) => (int)Math.Clamp(bytes / MiB * MiB, RecordBytes, MaxReadBytes);
}

/// <summary>
/// How a restore's buffers fit the share of the memory budget it was granted: <see cref="Reads"/>
/// buffers the image is read into, <see cref="ReadBytes"/> of the file at a time, and for each
/// writer thread a buffer of <see cref="PageBytes"/> that packed records decode into (and with -c
/// one of <see cref="CheckBytes"/> that written pages are read back into).
/// </summary>
internal readonly record struct RestoreBuffers(int ReadBytes, int Reads, int PageBytes, int CheckBytes)
{
    /// <summary>A read of about 4 MiB: four plain 1 MiB records with their padding pages (see <see cref="BatchStream.ReadBytes"/>).</summary>
    private const int FullRead = BatchStream.ReadBytes;

    /// <summary>Bytes asked of the budget: what the fastest layout takes, and the least a restore can run with.</summary>
    public static (long Least, long Wanted) Ask(int workers, bool packed, int checkBytes, int pageSize)
    {
        // Least: every buffer holds at least one whole record read with its padding, header and
        // the block on either side (an O_DIRECT read is aligned).
        long least = CheckpointBuffers.RecordBytes + 4L * pageSize;
        long full = FullRead + 2L * pageSize;
        long checks = workers * (long)checkBytes;
        return packed
            ? ((2 * workers + 1) * least + checks, (workers + 2) * full + workers * (long)FullRead + checks)
            : (3 * least + checks, (workers + 2) * full + checks);
    }

    public static RestoreBuffers For(MemoryGrant grant, int workers, bool packed, int checkBytes, int pageSize)
    {
        long bytes = grant.Bytes - workers * (long)checkBytes;
        long perRead = FullRead + 2L * pageSize;
        if (!packed)
        {
            // Up to one buffer for each writer and two for the readers; at least three, smaller if need be.
            long reads = Math.Min(workers + 2, bytes / perRead);
            if (reads >= 3)
                return new RestoreBuffers(FullRead, (int)reads, 0, checkBytes);
            return new RestoreBuffers(PageAligned(bytes / 3 - 2L * pageSize, pageSize), 3, 0, checkBytes);
        }
        // A decode buffer for each writer, and one read buffer more than there are writers: all of
        // the same size, as large as a full read at most.
        int units = 2 * workers + 1;
        long unit = Math.Min(perRead, bytes / units);
        return new RestoreBuffers(PageAligned(unit - 2L * pageSize, pageSize), workers + 1, PageAligned(unit, pageSize), checkBytes);
    }

    private static int PageAligned(long bytes, int pageSize) => (int)Math.Max(pageSize, bytes / pageSize * pageSize);
}
