using System.Runtime.InteropServices;
using Memcr.Engine.Incremental;
using Memcr.Image;
using Memcr.Linux;
using Memcr.Linux.Memory;
using Memcr.Linux.Proc;

namespace Memcr.Engine;

/// <summary>How saved pages get back into the target. Eager copy today; lazy (userfaultfd) later.</summary>
public interface IPageRestorer
{
    /// <summary>Writes every page of a verified image into the target, whose VMAs must still hold them.</summary>
    void Restore(ImageReader image);
}

/// <summary>
/// Copies every page back at once: the <see cref="RecordPipeline"/> reads, checks and decodes the
/// records on <paramref name="parallelism"/> threads, which write their pages into the target:
/// process_vm_writev in large batches for writable mappings, /proc/PID/mem (which forces through
/// page protections) for read-only and PROT_NONE ones. A record's pages are written only once it
/// is checked. With <paramref name="readBack"/> (memcr -c) every record is read back from the
/// target once written and compared with its content checksum.
/// </summary>
public sealed class EagerPageRestorer(RemoteMemory memory, int parallelism, MemoryBudget budget, bool keepCache = false, bool readBack = false, Log? log = null) : IPageRestorer
{

    public void Restore(ImageReader image) => Restore(image, null);

    /// <summary>
    /// Writes the pages of a verified image that lie in <paramref name="wanted"/> (an older image
    /// of a chain: only what the newer ones kept from it), or all of them (null). Batches with no
    /// such page are read but neither checked nor decoded.
    /// </summary>
    public void Restore(ImageReader image, IReadOnlyList<KeptRange>? wanted)
    {
        var mapped = Mapped(memory.Pid);
        var parts = new KeptRange[image.Index.Count][];
        var writable = new bool[image.Index.Count];
        for (int i = 0; i < image.Index.Count; i++)
        {
            var entry = image.Index[i];
            parts[i] = wanted is null ? [new KeptRange(entry.Address, entry.End)] : PageRanges.Within(wanted, entry.Address, entry.End).ToArray();
            writable[i] = true;
            foreach (var part in parts[i])
            {
                writable[i] &= Covered(mapped, part.Start, part.End) ?? throw new CheckpointException(
                    $"pages 0x{part.Start:x}-0x{part.End:x} of the image {image.Path} are no longer mapped in pid {memory.Pid}");
            }
        }
        int checkBytes = readBack && image.Index.Count > 0 ? image.Index.Max(e => e.Length) : 0;
        new RecordPipeline(image, parallelism, budget, keepCache, log, checkBytes).Run((batch, w) =>
        {
            Write(image, batch, parts, writable);
            if (readBack)
                ReadBack(image, batch, parts, w);
            return true;
        }, wanted is null ? null : i => parts[i].Length > 0);
    }

    /// <summary>Writes the wanted parts of a checked, decoded batch's records into the target.</summary>
    private void Write(ImageReader image, DecodedBatch decoded, KeptRange[][] parts, bool[] writable)
    {
        var batch = decoded.Batch;
        var transfers = new List<Transfer>(batch.Count);
        for (int i = batch.First; i < batch.First + batch.Count; i++)
        {
            var entry = image.Index[i];
            foreach (var part in parts[i])
            {
                var t = new Transfer(part.Start, decoded.Pages(i) + (nint)(part.Start - entry.Address), (int)(part.End - part.Start));
                if (writable[i])
                    transfers.Add(t);
                else
                    memory.WriteMem(t); // read-only or PROT_NONE: /proc/PID/mem forces through
            }
        }
        try
        {
            memory.WriteV(CollectionsMarshal.AsSpan(transfers));
        }
        catch (SyscallException e) when (e.Errno == Errno.EFAULT)
        {
            // A page became unwritable for process_vm_writev: /proc/PID/mem forces through.
            foreach (var t in transfers)
                memory.WriteMem(t);
        }
    }

    /// <summary>
    /// Reads what was written of each record of the batch back from the target and compares it:
    /// a whole record with its content checksum, a part of one with the checked, decoded pages.
    /// </summary>
    private unsafe void ReadBack(ImageReader image, DecodedBatch decoded, KeptRange[][] parts, RecordPipeline.Worker w)
    {
        var (batch, headers) = (decoded.Batch, decoded.Headers);
        for (int i = batch.First; i < batch.First + batch.Count; i++)
        {
            var entry = image.Index[i];
            w.Check ??= new AlignedBuffer(Math.Max(1, image.Index.Max(e => e.Length)), image.Header.PageSize);
            foreach (var part in parts[i])
            {
                int length = (int)(part.End - part.Start);
                memory.ReadMem(new Transfer(part.Start, w.Check.Pointer, length));
                var back = w.Check.GetSpan()[..length];
                bool same = length == entry.Length
                    ? ImageWriter.Checksum(back, image.Header.ImageId) == headers[i - batch.First].ContentChecksum
                    : back.SequenceEqual(new ReadOnlySpan<byte>((byte*)(decoded.Pages(i) + (nint)(part.Start - entry.Address)), length));
                if (!same)
                {
                    throw new CheckpointException(
                        $"checksum mismatch after restore: page record {i} of {image.Path} (pages 0x{part.Start:x}-0x{part.End:x}) reads back from pid {memory.Pid} different from what was checkpointed");
                }
            }
        }
    }

    /// <summary>An address range mapped without a gap, writable throughout or not.</summary>
    internal readonly record struct MappedRange(ulong Start, ulong End, bool Writable);

    /// <summary>
    /// The target's mappings as ranges: adjacent VMAs alike in being writable or not are one range
    /// (a process can have tens of thousands of VMAs; this is all that is needed of them here).
    /// </summary>
    internal static List<MappedRange> Mapped(int pid)
    {
        var ranges = new List<MappedRange>();
        ProcFs.ReadMaps(pid, vma =>
        {
            if (ranges.Count > 0 && ranges[^1].End == vma.Start && ranges[^1].Writable == vma.IsWritable)
                ranges[^1] = ranges[^1] with { End = vma.End };
            else
                ranges.Add(new MappedRange(vma.Start, vma.End, vma.IsWritable));
        });
        return ranges;
    }

    /// <summary>
    /// Whether [start, end) is mapped without a gap (a record may span adjacent VMAs): null if
    /// not, else whether every VMA under it is writable (process_vm_writev can write it).
    /// </summary>
    internal static bool? Covered(List<MappedRange> ranges, ulong start, ulong end)
    {
        bool writable = true;
        ulong at = start;
        for (int i = VmaSelector.FirstEndingAfter(ranges, start, r => r.End); i < ranges.Count && at < end; i++)
        {
            if (ranges[i].Start > at || ranges[i].End <= at)
                return null;
            writable &= ranges[i].Writable;
            at = ranges[i].End;
        }
        return at >= end ? writable : null;
    }
}
