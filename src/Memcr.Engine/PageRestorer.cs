using Memcr.Image;
using Memcr.Linux;
using Memcr.Linux.Memory;
using Memcr.Linux.Proc;

namespace Memcr.Engine;

/// <summary>How saved pages get back into the target. Eager copy today; lazy (userfaultfd) later.</summary>
public interface IPageRestorer
{
    /// <summary>Writes every page of a verified image into the target.</summary>
    void Restore(ImageReader image, IReadOnlyList<Vma> currentVmas);
}

/// <summary>
/// Copies every page back at once: process_vm_writev in large batches for writable mappings,
/// /proc/PID/mem (which forces through page protections) for read-only and PROT_NONE ones.
/// Compressed or encrypted records are decoded (and checked) on the way. With
/// <paramref name="readBack"/> (memcr -c) every record is read back from the target once written
/// and compared with its content checksum.
/// </summary>
public sealed class EagerPageRestorer(RemoteMemory memory, int parallelism, Action<PageBatch>? written = null, bool readBack = false) : IPageRestorer
{
    private const int BatchBytes = 2 << 20;
    private const int BatchPageBytes = 4 << 20;

    public void Restore(ImageReader image, IReadOnlyList<Vma> currentVmas)
    {
        var writable = new bool[image.Index.Count];
        for (int i = 0; i < image.Index.Count; i++)
        {
            var entry = image.Index[i];
            var vma = Find(currentVmas, entry.Address);
            if (vma is null || entry.End > vma.Value.End)
            {
                throw new CheckpointException(
                    $"pages 0x{entry.Address:x}-0x{entry.End:x} of the image are no longer mapped in pid {memory.Pid}");
            }
            writable[i] = vma.Value.IsWritable;
        }

        var batches = image.PlanBatches(BatchBytes, BatchPageBytes);
        int size = batches.Count == 0 ? 4096 : batches.Max(b => b.Length);
        int pageSize = image.Header.PageSize;
        bool decode = image.Header.Packed;
        int pageBytes = batches.Count == 0 ? 4096 : batches.Max(b => Enumerable.Range(b.First, b.Count).Sum(i => image.Index[i].Length));
        Parallel.ForEach(
            batches,
            new ParallelOptions { MaxDegreeOfParallelism = parallelism + 1 },
            () => new Worker(
                new AlignedBuffer(size, pageSize),
                decode ? new AlignedBuffer(pageBytes, pageSize) : null,
                decode ? image.CreateDecoder() : null),
            (batch, _, w) =>
            {
                // ReadBatch checks every record again: what reaches the target is what was verified.
                var headers = image.ReadBatch(batch, w.Read.Memory);
                var transfers = new List<Transfer>(batch.Count);
                int used = 0;
                for (int i = batch.First; i < batch.First + batch.Count; i++)
                {
                    var entry = image.Index[i];
                    nint from = w.Read.Pointer + image.PayloadOffset(batch, i);
                    if (w.Decoder is not null && !headers[i - batch.First].IsPlain)
                    {
                        var pages = w.Pages!.GetSpan().Slice(used, entry.Length);
                        image.Decode(batch, w.Read.GetSpan(), headers, i, w.Decoder, pages);
                        from = w.Pages.Pointer + used;
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
                    memory.WriteV(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(transfers));
                }
                catch (SyscallException e) when (e.Errno == Errno.EFAULT)
                {
                    // A page became unwritable for process_vm_writev: /proc/PID/mem forces through.
                    foreach (var t in transfers)
                        memory.WriteMem(t);
                }
                if (readBack)
                    ReadBack(image, batch, headers, w);
                written?.Invoke(batch);
                return w;
            },
            w => w.Dispose());
    }

    /// <summary>Reads each record of the batch back from the target and compares it with its content checksum.</summary>
    private void ReadBack(ImageReader image, in PageBatch batch, RecordHeader[] headers, Worker w)
    {
        for (int i = batch.First; i < batch.First + batch.Count; i++)
        {
            var entry = image.Index[i];
            w.Check ??= new AlignedBuffer(image.Index.Max(e => e.Length), image.Header.PageSize);
            memory.ReadMem(new Transfer(entry.Address, w.Check.Pointer, entry.Length));
            if (ImageWriter.Checksum(w.Check.GetSpan()[..entry.Length], image.Header.ImageId) != headers[i - batch.First].ContentChecksum)
            {
                throw new CheckpointException(
                    $"checksum mismatch after restore: page record {i} (pages 0x{entry.Address:x}-0x{entry.End:x}) reads back from pid {memory.Pid} different from what was checkpointed");
            }
        }
    }

    private sealed class Worker(AlignedBuffer read, AlignedBuffer? pages, RecordDecoder? decoder) : IDisposable
    {
        public AlignedBuffer Read { get; } = read;
        public AlignedBuffer? Pages { get; } = pages;
        public RecordDecoder? Decoder { get; } = decoder;
        public AlignedBuffer? Check { get; set; }

        public void Dispose()
        {
            ((IDisposable)Read).Dispose();
            (Pages as IDisposable)?.Dispose();
            (Check as IDisposable)?.Dispose();
            Decoder?.Dispose();
        }
    }

    internal static Vma? Find(IReadOnlyList<Vma> vmas, ulong address)
    {
        int lo = 0, hi = vmas.Count - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >>> 1;
            var v = vmas[mid];
            if (address < v.Start)
                hi = mid - 1;
            else if (address >= v.End)
                lo = mid + 1;
            else
                return v;
        }
        return null;
    }
}
