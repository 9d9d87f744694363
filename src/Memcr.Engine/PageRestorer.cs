using System.Collections.Concurrent;
using System.Runtime.ExceptionServices;
using System.Runtime.InteropServices;
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
/// Copies every page back at once, in one pipeline: a <see cref="BatchStream"/> reads the image
/// in large sequential reads while <paramref name="parallelism"/> threads check each batch's
/// records (header, index entry, payload checksum), decode them (decrypting and decompressing,
/// checking the content checksum) and write their pages into the target: process_vm_writev in
/// large batches for writable mappings, /proc/PID/mem (which forces through page protections) for
/// read-only and PROT_NONE ones. A record's pages are written only once it is checked. With
/// <paramref name="readBack"/> (memcr -c) every record is read back from the target once written
/// and compared with its content checksum. With <paramref name="keepCache"/> the image is read
/// through the page cache and left there; otherwise it is read with O_DIRECT. Its buffers are
/// granted by <paramref name="budget"/> and sized to fit the grant (<see cref="RestoreBuffers"/>).
/// </summary>
public sealed class EagerPageRestorer(RemoteMemory memory, int parallelism, MemoryBudget budget, bool keepCache = false, bool readBack = false, Log? log = null) : IPageRestorer
{

    public void Restore(ImageReader image)
    {
        var mapped = Mapped(memory.Pid);
        var writable = new bool[image.Index.Count];
        for (int i = 0; i < image.Index.Count; i++)
        {
            var entry = image.Index[i];
            writable[i] = Covered(mapped, entry.Address, entry.End) ?? throw new CheckpointException(
                $"pages 0x{entry.Address:x}-0x{entry.End:x} of the image are no longer mapped in pid {memory.Pid}");
        }

        int workers = Math.Max(1, parallelism);
        bool packed = image.Header.Packed;
        int checkBytes = readBack && image.Index.Count > 0 ? image.Index.Max(e => e.Length) : 0;
        var (least, wanted) = RestoreBuffers.Ask(workers, packed, checkBytes, image.Header.PageSize);
        using var grant = budget.Acquire(least, wanted);
        var layout = RestoreBuffers.For(grant, workers, packed, checkBytes, image.Header.PageSize);
        log?.Debug($"buffers: {grant.Bytes >> 10} kB granted; {layout}");
        using var stream = new BatchStream(image, layout.ReadBytes, packed ? layout.PageBytes : layout.ReadBytes, layout.Reads, keepCache);
        var failures = new ConcurrentQueue<Exception>();
        var threads = new Thread[workers];
        for (int t = 0; t < workers; t++)
        {
            threads[t] = new Thread(() =>
            {
                try
                {
                    using var w = new Worker(layout.PageBytes);
                    while (stream.TryTake(out var batch))
                    {
                        try
                        {
                            Write(image, batch, writable, w);
                        }
                        finally
                        {
                            stream.Return(batch);
                        }
                    }
                }
                catch (Exception e)
                {
                    failures.Enqueue(e);
                    stream.Stop();
                }
            }) { Name = $"memcr restore {t}", IsBackground = true };
            threads[t].Start();
        }
        foreach (var t in threads)
            t.Join();
        if (failures.TryDequeue(out var first))
            ExceptionDispatchInfo.Throw(first);
    }

    /// <summary>Checks a batch's records, decodes them and writes their pages into the target.</summary>
    private void Write(ImageReader image, FilledBatch filled, bool[] writable, Worker w)
    {
        var batch = filled.Batch;
        var headers = image.CheckBatch(batch, filled.Data);
        int pageBytes = 0;
        for (int i = batch.First; i < batch.First + batch.Count; i++)
            pageBytes += image.Index[i].Length;
        var transfers = new List<Transfer>(batch.Count);
        int used = 0;
        for (int i = batch.First; i < batch.First + batch.Count; i++)
        {
            var entry = image.Index[i];
            nint from = filled.Pointer + image.PayloadOffset(batch, i);
            if (!headers[i - batch.First].IsPlain)
            {
                var buffer = w.PagesFor(pageBytes, image.Header.PageSize);
                w.Decoder ??= image.CreateDecoder();
                image.Decode(batch, filled.Data, headers, i, w.Decoder, buffer.GetSpan().Slice(used, entry.Length));
                from = buffer.Pointer + used;
                used += entry.Length;
            }
            var t = new Transfer(entry.Address, from, entry.Length);
            if (writable[i])
                transfers.Add(t);
            else
                memory.WriteMem(t); // read-only or PROT_NONE: /proc/PID/mem forces through
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
        if (readBack)
            ReadBack(image, batch, headers, w);
    }

    /// <summary>Reads each record of the batch back from the target and compares it with its content checksum.</summary>
    private void ReadBack(ImageReader image, in PageBatch batch, RecordHeader[] headers, Worker w)
    {
        for (int i = batch.First; i < batch.First + batch.Count; i++)
        {
            var entry = image.Index[i];
            w.Check ??= new AlignedBuffer(Math.Max(1, image.Index.Max(e => e.Length)), image.Header.PageSize);
            memory.ReadMem(new Transfer(entry.Address, w.Check.Pointer, entry.Length));
            if (ImageWriter.Checksum(w.Check.GetSpan()[..entry.Length], image.Header.ImageId) != headers[i - batch.First].ContentChecksum)
            {
                throw new CheckpointException(
                    $"checksum mismatch after restore: page record {i} (pages 0x{entry.Address:x}-0x{entry.End:x}) reads back from pid {memory.Pid} different from what was checkpointed");
            }
        }
    }

    /// <summary>What one writer thread decodes into and reads back into, made when first needed.</summary>
    private sealed class Worker(int pageBytes) : IDisposable
    {
        public AlignedBuffer? Pages { get; private set; }
        public RecordDecoder? Decoder { get; set; }
        public AlignedBuffer? Check { get; set; }

        /// <summary>
        /// The buffer decoded pages go to, at least <paramref name="bytes"/> long: a record larger
        /// than a batch's planned pages is read alone, and the buffer grows for it.
        /// </summary>
        public AlignedBuffer PagesFor(int bytes, int pageSize)
        {
            if (Pages is null || Pages.Length < bytes)
            {
                (Pages as IDisposable)?.Dispose();
                Pages = new AlignedBuffer(Math.Max(pageBytes, bytes), pageSize);
            }
            return Pages;
        }

        public void Dispose()
        {
            (Pages as IDisposable)?.Dispose();
            (Check as IDisposable)?.Dispose();
            Decoder?.Dispose();
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
        int lo = 0, hi = ranges.Count - 1;
        while (lo < hi)
        {
            int mid = (lo + hi) >>> 1;
            if (ranges[mid].End <= start)
                lo = mid + 1;
            else
                hi = mid;
        }
        bool writable = true;
        ulong at = start;
        for (int i = lo; i < ranges.Count && at < end; i++)
        {
            if (ranges[i].Start > at || ranges[i].End <= at)
                return null;
            writable &= ranges[i].Writable;
            at = ranges[i].End;
        }
        return at >= end ? writable : null;
    }
}
