using System.Runtime.InteropServices;

namespace Memcr.Linux.Memory;

/// <summary>Pages to read from a process: [Address, Address + Length), through /proc/PID/mem when <paramref name="ForceProcMem"/> (unreadable mappings, memcr -m).</summary>
public readonly record struct PageSegment(ulong Address, int Length, bool ForceProcMem = false);

/// <summary>A buffer of pages read from a process: consecutive segments, each at its offset in the buffer.</summary>
public sealed class PageBuffer(AlignedBuffer buffer, int number, int firstSegment)
{
    public AlignedBuffer Buffer { get; } = buffer;

    /// <summary>Batches are numbered from 0 in the order the segments were given.</summary>
    public int Number { get; } = number;

    /// <summary>Index of the batch's first segment in the list given to <see cref="PageReader.Read"/>.</summary>
    public int FirstSegment { get; } = firstSegment;

    public List<(PageSegment Segment, int Offset)> Segments { get; } = [];

    /// <summary>Bytes of the buffer in use.</summary>
    public int Length { get; internal set; }
}

/// <summary>
/// The reading half of the page pipeline both modes use: a process's pages, in the order given,
/// into large buffers with as few process_vm_readv calls as possible (up to IOV_MAX segments a
/// call), each full buffer handed on at once so that writing it overlaps reading the next.
/// </summary>
public sealed class PageReader(RemoteMemory memory)
{
    // IOV_MAX: one process_vm_readv takes at most this many ranges.
    private const int IovMax = 1024;

    /// <summary>
    /// Reads every segment (none larger than a buffer) into buffers from <paramref name="take"/>,
    /// and gives each filled batch to <paramref name="filled"/>, on this thread and in order.
    /// </summary>
    public void Read(IReadOnlyList<PageSegment> segments, Func<CancellationToken, AlignedBuffer> take, Action<PageBuffer> filled, CancellationToken cancel)
    {
        var transfers = new List<Transfer>(IovMax);
        int index = 0;
        int number = 0;
        while (index < segments.Count)
        {
            var batch = new PageBuffer(take(cancel), number++, index);
            transfers.Clear();
            int used = 0;
            nint basePtr = batch.Buffer.Pointer;
            while (index < segments.Count && transfers.Count < IovMax)
            {
                var s = segments[index];
                if (s.Length > batch.Buffer.Length)
                    throw new ArgumentException($"a segment of {s.Length} bytes does not fit a {batch.Buffer.Length}-byte buffer", nameof(segments));
                if (used + s.Length > batch.Buffer.Length)
                    break;
                var t = new Transfer(s.Address, basePtr + used, s.Length);
                if (s.ForceProcMem)
                    memory.ReadMem(t);
                else
                    transfers.Add(t);
                batch.Segments.Add((s, used));
                used += s.Length;
                index++;
            }
            if (transfers.Count > 0)
                memory.ReadV(CollectionsMarshal.AsSpan(transfers));
            batch.Length = used;
            filled(batch);
        }
    }
}
