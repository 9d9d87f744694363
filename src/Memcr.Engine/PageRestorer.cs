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
/// </summary>
public sealed class EagerPageRestorer(RemoteMemory memory, int parallelism, Action<PageBatch>? written = null) : IPageRestorer
{
    private const int BatchBytes = 2 << 20;

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

        var batches = image.PlanBatches(BatchBytes);
        int size = batches.Count == 0 ? 4096 : batches.Max(b => b.Length);
        Parallel.ForEach(
            batches,
            new ParallelOptions { MaxDegreeOfParallelism = parallelism + 1 },
            () => new AlignedBuffer(size, image.Header.PageSize),
            (batch, _, buffer) =>
            {
                // ReadBatch checks every record again: what reaches the target is what was verified.
                image.ReadBatch(batch, buffer.Memory);
                var transfers = new List<Transfer>(batch.Count);
                for (int i = batch.First; i < batch.First + batch.Count; i++)
                {
                    var entry = image.Index[i];
                    var t = new Transfer(entry.Address, buffer.Pointer + image.PayloadOffset(batch, i), entry.Length);
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
                written?.Invoke(batch);
                return buffer;
            },
            buffer => ((IDisposable)buffer).Dispose());
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
