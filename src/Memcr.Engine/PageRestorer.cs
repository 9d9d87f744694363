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
public sealed class EagerPageRestorer(RemoteMemory memory, int parallelism) : IPageRestorer
{
    private const int BatchRecords = 1024;

    public void Restore(ImageReader image, IReadOnlyList<Vma> currentVmas)
    {
        var writable = new List<IndexEntry>();
        var forced = new List<IndexEntry>();
        foreach (var entry in image.Index)
        {
            var vma = Find(currentVmas, entry.Address);
            if (vma is null || entry.End > vma.Value.End)
            {
                throw new CheckpointException(
                    $"pages 0x{entry.Address:x}-0x{entry.End:x} of the image are no longer mapped in pid {memory.Pid}");
            }
            (vma.Value.IsWritable ? writable : forced).Add(entry);
        }

        // Slices of contiguous records, one batch of process_vm_writev each.
        int slices = (writable.Count + BatchRecords - 1) / BatchRecords;
        Parallel.For(0, slices, new ParallelOptions { MaxDegreeOfParallelism = parallelism }, s =>
        {
            int from = s * BatchRecords;
            int count = Math.Min(BatchRecords, writable.Count - from);
            var transfers = new Transfer[count];
            for (int i = 0; i < count; i++)
            {
                var e = writable[from + i];
                transfers[i] = new Transfer(e.Address, image.PayloadPointer(e), e.Length);
            }
            try
            {
                memory.WriteV(transfers);
            }
            catch (SyscallException e) when (e.Errno == Errno.EFAULT)
            {
                // A page became unwritable for process_vm_writev: /proc/PID/mem forces through.
                foreach (var t in transfers)
                    memory.WriteMem(t);
            }
        });
        Parallel.ForEach(forced, new ParallelOptions { MaxDegreeOfParallelism = parallelism }, e =>
            memory.WriteMem(new Transfer(e.Address, image.PayloadPointer(e), e.Length)));
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
