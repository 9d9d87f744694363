using System.Collections.Concurrent;
using System.Diagnostics;
using Memcr.Linux;
using Memcr.Linux.Memory;

namespace Memcr.Dump.Dumping;

/// <summary>
/// Writes a process's pages into pages-N.img with the shared page pipeline: this thread reads
/// them in 4 MiB batches (process_vm_readv) while two writer threads put each batch at its place
/// in the file. The file is allocated first, so that a full disk is found before any page is read.
/// Writes go through the page cache, as CRIU's do: the tree's own memory is freed when it is
/// killed after the dump, and a restore soon after reads the images from RAM (memcr mode writes
/// with O_DIRECT instead, since there the process keeps its mappings).
/// </summary>
internal sealed class PageWriter(BufferPool buffers)
{
    public const int BufferBytes = MemoryDumper.SegmentBytes;

    /// <summary>Time the pipeline ran (reading and writing overlapped), and time spent in writes.</summary>
    public TimeSpan ReadTime { get; private set; }

    public TimeSpan WriteTime { get; private set; }

    public void Write(int pid, IReadOnlyList<PageSegment> segments, string path, CancellationToken cancel = default)
    {
        long total = segments.Sum(s => (long)s.Length);
        using (var create = File.Create(path))
        {
            if (total > 0 && !FileOps.Preallocate(create.SafeFileHandle, total, path))
                create.SetLength(0);
        }
        if (total == 0)
            return;
        using var file = File.OpenHandle(path, FileMode.Open, FileAccess.Write);
        using var lease = buffers.Borrow();
        using var full = new BlockingCollection<(PageBuffer Batch, long Offset)>(4);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancel);
        Exception? failure = null;
        long writeTicks = 0;
        var writers = Enumerable.Range(0, 2).Select(n => new Thread(() =>
        {
            try
            {
                foreach (var (batch, offset) in full.GetConsumingEnumerable(stop.Token))
                {
                    long t = Stopwatch.GetTimestamp();
                    RandomAccess.Write(file, batch.Buffer.Memory.Span[..batch.Length], offset);
                    Interlocked.Add(ref writeTicks, Stopwatch.GetTimestamp() - t);
                    lease.Return(batch.Buffer);
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
        { Name = $"memcr pages writer {n}", IsBackground = true }).ToList();
        writers.ForEach(t => t.Start());
        long started = Stopwatch.GetTimestamp();
        try
        {
            long offset = 0;
            using var memory = new RemoteMemory(pid);
            new PageReader(memory).Read(segments, lease.Take, batch =>
            {
                full.Add((batch, offset), stop.Token);
                offset += batch.Length;
            }, stop.Token);
        }
        catch (OperationCanceledException) when (failure is not null)
        {
        }
        finally
        {
            full.CompleteAdding();
            writers.ForEach(t => t.Join());
        }
        ReadTime += Stopwatch.GetElapsedTime(started);
        WriteTime += TimeSpan.FromSeconds((double)writeTicks / Stopwatch.Frequency);
        if (failure is not null)
            throw new IOException($"cannot write {path}: {failure.Message}", failure);
        cancel.ThrowIfCancellationRequested();
    }
}
