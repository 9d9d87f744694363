using System.Collections.Concurrent;
using System.Runtime.ExceptionServices;
using Memcr.Image;
using Memcr.Linux.Memory;

namespace Memcr.Engine;

/// <summary>A batch of page records, checked and decoded: where each record's pages are.</summary>
internal sealed class DecodedBatch(PageBatch batch, RecordHeader[] headers, nint[] pages)
{
    public PageBatch Batch { get; } = batch;

    public RecordHeader[] Headers { get; } = headers;

    /// <summary>Where the pages of record <paramref name="record"/> (an index into the image) are, for as long as the batch is being handled.</summary>
    public nint Pages(int record) => pages[record - Batch.First];
}

/// <summary>
/// The page pipeline of a restore, eager or lazy: a <see cref="BatchStream"/> reads the image in
/// large sequential reads (O_DIRECT unless the image is to stay cached) while
/// <paramref name="parallelism"/> threads check each batch's records (header, index entry,
/// payload checksum), decode them (decrypting and decompressing, checking the content checksum)
/// and hand them to the caller's sink, which puts the pages where they belong. Reading overlaps
/// with everything else. Its buffers are granted by <paramref name="budget"/> and sized to fit
/// the grant (<see cref="RestoreBuffers"/>); <paramref name="checkBytes"/> more per thread when the
/// sink reads records back. Reads are at most <paramref name="maxReadBytes"/> long (a record larger
/// than that is read alone); <paramref name="readers"/> are in flight, in as many more buffers as
/// the grant holds when reads are shorter than it was sized for.
/// </summary>
internal sealed class RecordPipeline(ImageReader image, int parallelism, MemoryBudget budget, bool keepCache, Log? log, int checkBytes = 0, int maxReadBytes = int.MaxValue, int readers = BatchStream.DefaultReaders)
{
    /// <summary>
    /// Runs the sink on every batch until all are done or the sink returns false; rethrows the
    /// first failure, once every thread has stopped. With <paramref name="wanted"/> (given a
    /// record's index) only the records it wants are read and checked, asked just before their
    /// batch is read, and a batch none of whose records is wanted any more when it is taken is
    /// not handed to the sink.
    /// </summary>
    public void Run(Func<DecodedBatch, Worker, bool> sink, Func<int, bool>? wanted = null)
    {
        int workers = Math.Max(1, parallelism);
        bool packed = image.Header.Packed;
        var (least, want) = RestoreBuffers.Ask(workers, packed, checkBytes, image.Header.PageSize);
        using var grant = budget.Acquire(least, want);
        var layout = RestoreBuffers.For(grant, workers, packed, checkBytes, image.Header.PageSize);
        log?.Debug($"buffers: {grant.Bytes >> 10} kB granted; {layout}");
        int readBytes = Math.Min(layout.ReadBytes, maxReadBytes);
        // Each reader holds a buffer while it reads, and each worker one while it copies.
        int buffers = (int)Math.Max(layout.Reads, Math.Min((long)layout.Reads * layout.ReadBytes / readBytes, readers + workers));
        using var stream = new BatchStream(image, readBytes, packed ? layout.PageBytes : readBytes, buffers, keepCache, wanted, readers);
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
                            if ((wanted is null || AnyWanted(batch.Batch, wanted)) && !sink(Decode(batch, w), w))
                                stream.Stop();
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

    private static bool AnyWanted(PageBatch batch, Func<int, bool> wanted)
    {
        for (int i = batch.First; i < batch.First + batch.Count; i++)
        {
            if (wanted(i))
                return true;
        }
        return false;
    }

    /// <summary>Checks a batch's records and decodes those that are not stored plain.</summary>
    private DecodedBatch Decode(FilledBatch filled, Worker w)
    {
        var batch = filled.Batch;
        var headers = image.CheckBatch(batch, filled.Data);
        int pageBytes = 0;
        for (int i = batch.First; i < batch.First + batch.Count; i++)
            pageBytes += image.Index[i].Length;
        var pages = new nint[batch.Count];
        int used = 0;
        for (int i = batch.First; i < batch.First + batch.Count; i++)
        {
            var entry = image.Index[i];
            pages[i - batch.First] = filled.Pointer + image.PayloadOffset(batch, i);
            if (!headers[i - batch.First].IsPlain)
            {
                var buffer = w.PagesFor(pageBytes, image.Header.PageSize);
                w.Decoder ??= image.CreateDecoder();
                image.Decode(batch, filled.Data, headers, i, w.Decoder, buffer.GetSpan().Slice(used, entry.Length));
                pages[i - batch.First] = buffer.Pointer + used;
                used += entry.Length;
            }
        }
        return new DecodedBatch(batch, headers, pages);
    }

    /// <summary>What one pipeline thread decodes into (and a sink reads back into), made when first needed.</summary>
    internal sealed class Worker(int pageBytes) : IDisposable
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
}
