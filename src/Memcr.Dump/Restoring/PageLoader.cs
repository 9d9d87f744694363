using System.Collections.Concurrent;
using Memcr.CriuImages.Pages;
using Memcr.Linux;
using Memcr.Linux.Memory;

namespace Memcr.Dump.Restoring;

/// <summary>
/// Writes a process's pages from pages-N.img into it: this thread reads the file in large pieces
/// while two threads write them with process_vm_writev (/proc/PID/mem where a page is not
/// writable). Pages a forked child shares with its parent are compared first and written only
/// where they differ, so that what was shared copy-on-write at the dump is shared again.
/// </summary>
internal sealed class PageLoader(BufferPool buffers)
{
    public const int PieceBytes = 4 << 20;

    /// <summary>Threads writing into the process: faulting its pages in is the cost, and it spreads over cores.</summary>
    private static readonly int Writers = Math.Max(2, Environment.ProcessorCount);
    private const int PageSize = PageMap.PageSize;

    public long PagesWritten => Interlocked.Read(ref _written);

    public long PagesShared => Interlocked.Read(ref _shared);

    private long _written;
    private long _shared;

    /// <summary>
    /// Loads every present run of <paramref name="map"/>. For addresses where <paramref name="inherited"/>
    /// is true the process already holds its parent's page: it is kept when the bytes are the same.
    /// </summary>
    public void Load(RemoteMemory memory, string dir, PageMap map, Func<ulong, bool> inherited)
    {
        if (map.PageBytes == 0)
            return;
        // An image still in the page cache (a restore right after its dump) is read from there;
        // otherwise O_DIRECT puts it straight into our buffers: a page cache of it would take as
        // much fresh memory again as the process, on machines where fresh memory is the cost.
        string path = Path.Combine(dir, $"pages-{map.PagesId}.img");
        bool cached = FileOps.ResidentPages(path) * PageSize >= map.PageBytes * 9 / 10;
        using var reader = PagesReader.Open(dir, map, direct: !cached);
        using var lease = buffers.Borrow();
        using var queue = new BlockingCollection<(ulong Address, int Length, AlignedBuffer Buffer)>(Writers + 2);
        Exception? failure = null;
        using var stop = new CancellationTokenSource();
        var writers = Enumerable.Range(0, Writers).Select(n => new Thread(() =>
        {
            using var current = new AlignedBuffer(PieceBytes, PageSize);
            try
            {
                foreach (var (address, length, buffer) in queue.GetConsumingEnumerable(stop.Token))
                {
                    if (inherited(address))
                        WriteDifferences(memory, address, buffer.GetSpan()[..length], buffer.Pointer, current);
                    else
                        Write(memory, new Transfer(address, buffer.Pointer, length));
                    lease.Return(buffer);
                }
            }
            catch (OperationCanceledException)
            {
            }
            catch (Exception e)
            {
                Interlocked.CompareExchange(ref failure, e, null);
                stop.Cancel();
            }
        })
        { Name = $"memcr page loader {n}", IsBackground = true }).ToList();
        writers.ForEach(t => t.Start());
        try
        {
            // Two reads in flight keep a disk busy; each piece goes to the writers as soon as it is in.
            var pieces = map.Runs.Where(r => r.InFile)
                .SelectMany(r => Enumerable.Range(0, (int)((r.Bytes + PieceBytes - 1) / PieceBytes))
                    .Select(i => (Address: r.Address + (ulong)i * PieceBytes, Offset: r.FileOffset + (long)i * PieceBytes, Length: (int)Math.Min(PieceBytes, r.Bytes - (long)i * PieceBytes))))
                .ToList();
            Parallel.ForEach(pieces, new ParallelOptions { MaxDegreeOfParallelism = 2, CancellationToken = stop.Token }, piece =>
            {
                var buffer = lease.Take(stop.Token);
                reader.ReadAt(piece.Offset, buffer.GetSpan()[..piece.Length]);
                queue.Add((piece.Address, piece.Length, buffer), stop.Token);
            });
        }
        catch (OperationCanceledException) when (failure is not null)
        {
        }
        finally
        {
            queue.CompleteAdding();
            writers.ForEach(t => t.Join());
        }
        if (failure is not null)
            throw new IOException($"cannot write the pages of pid {memory.Pid}: {failure.Message}", failure);
    }

    private void Write(RemoteMemory memory, Transfer t)
    {
        try
        {
            memory.WriteV([t]);
        }
        catch (SyscallException e) when (e.Errno == Errno.EFAULT)
        {
            memory.WriteMem(t); // a read-only page: /proc/PID/mem forces through
        }
        Interlocked.Add(ref _written, t.Length / PageSize);
    }

    /// <summary>Writes only the pages that differ from what the process holds now.</summary>
    private void WriteDifferences(RemoteMemory memory, ulong address, ReadOnlySpan<byte> wanted, nint wantedPtr, AlignedBuffer current)
    {
        // Through /proc/PID/mem: process_vm_readv would pin the pages, and pinning a shared
        // anonymous page gives the process a copy of its own, the very thing to avoid here.
        try
        {
            memory.ReadMem(new Transfer(address, current.Pointer, wanted.Length));
        }
        catch (SyscallException e) when (e.Errno is Errno.EFAULT or Errno.EIO)
        {
            Write(memory, new Transfer(address, wantedPtr, wanted.Length)); // nothing there to compare with
            return;
        }
        var now = current.GetSpan()[..wanted.Length];
        int pages = wanted.Length / PageSize;
        for (int i = 0; i < pages;)
        {
            if (wanted.Slice(i * PageSize, PageSize).SequenceEqual(now.Slice(i * PageSize, PageSize)))
            {
                Interlocked.Increment(ref _shared);
                i++;
                continue;
            }
            int j = i + 1;
            while (j < pages && !wanted.Slice(j * PageSize, PageSize).SequenceEqual(now.Slice(j * PageSize, PageSize)))
                j++;
            Write(memory, new Transfer(address + (ulong)(i * PageSize), wantedPtr + i * PageSize, (j - i) * PageSize));
            i = j;
        }
    }
}
