using System.Collections.Concurrent;
using Memcr.Engine.Incremental;
using Memcr.Image;
using Memcr.Linux;
using Memcr.Linux.Memory;

namespace Memcr.Engine;

/// <summary>
/// memcr's image of a frozen process: which pages to save (and so to drop), then reading them in
/// batches on this thread while writer threads put them into the image (O_DIRECT for plain
/// images; compressed or encrypted ones are encoded on every core and appended in order).
/// </summary>
internal sealed class ImageDump(CheckpointOptions options, Log log, RemoteMemory memory, ulong imageId, byte[]? key)
{
    /// <summary>Largest record: pages of one run are split into records of at most this size.</summary>
    private const int RecordBytes = CheckpointBuffers.RecordBytes;

    /// <summary>Writeback of the image is started every this many bytes so that the final fdatasync is short.</summary>
    private const long WritebackStep = 64L << 20;

    private readonly CheckpointOptions _options = options;
    private readonly Log _log = log;
    private readonly RemoteMemory _memory = memory;
    private readonly ulong _imageId = imageId;
    private readonly byte[]? _key = key;

    private int Pid => _options.Pid;

    private string ImagePath => _options.ImagePath;

    /// <summary>The image file exists (and must be removed if the checkpoint fails).</summary>
    public bool ImageCreated { get; private set; }

    public long ImageBytes { get; private set; }

    public ulong SavedBytes { get; private set; }

    public ulong StoredBytes { get; private set; }

    /// <summary>
    /// A record to save: pages [Address, Address + Length), of one VMA or of several adjacent ones
    /// (a program that mprotects every other page has a VMA per page).
    /// </summary>
    internal readonly record struct PlannedRecord(ulong Address, int Length, bool Forced);

    /// <summary>
    /// The records to save; the VMAs that had pages to save, for the image's VMA table; and those
    /// VMAs again as runs of adjacent ones, to drop once the image is written (a few runs for
    /// tens of thousands of VMAs).
    /// </summary>
    internal sealed record CheckpointPlan(List<PlannedRecord> Records, VmaTable Vmas, ulong Bytes, List<(ulong Start, ulong End)> DropSpans)
    {
        /// <summary>Incremental checkpoints: the pages not written since the last restore that the older images hold.</summary>
        public List<KeptRange>? Kept { get; init; }
    }

    /// <summary>Incremental checkpoints: the image this one is taken over (its id) and its depth in the chain.</summary>
    public (ulong Id, int Depth)? Parent { get; set; }

    /// <summary>
    /// What to save. With <paramref name="held"/> (the pages the older images of the process's
    /// chain hold, for an incremental checkpoint), pages that have not been written since its
    /// restore write-protected them, and that the chain holds, are kept from there instead.
    /// </summary>
    public CheckpointPlan Plan(List<SelectedVma> selected, IReadOnlyList<KeptRange>? held = null)
    {
        var records = new List<PlannedRecord>();
        var vmas = new VmaTable(selected.Count);
        var drop = new List<(ulong Start, ulong End)>();
        ulong total = 0;
        int withPages = 0;
        using var scanner = new PagemapScanner(Pid);
        var runs = held is null ? Scan(scanner, selected) : ScanWrites(scanner, selected);
        var unchanged = new List<KeptRange>();
        // Pages to save are gathered into one run for as long as they follow one another, across
        // VMA boundaries, then cut into records.
        ulong runStart = 0, runEnd = 0;
        bool runForced = false;
        void Cut()
        {
            for (ulong at = runStart; at < runEnd; at += RecordBytes)
                records.Add(new PlannedRecord(at, (int)Math.Min(RecordBytes, runEnd - at), runForced));
            runStart = runEnd = 0;
        }
        int first = 0;
        foreach (var s in selected)
        {
            while (first < runs.Count && runs[first].End <= s.Start)
                first++;
            // Unreadable mappings (PROT_NONE, exec-only) and -m go through /proc/PID/mem.
            bool forced = _options.UseProcMem || !s.IsReadable;
            bool any = false;
            ulong saved = 0;
            for (int k = first; k < runs.Count && runs[k].Start < s.End; k++)
            {
                var run = runs[k];
                any = true;
                // In a private file mapping only written (copy-on-write, now anonymous) pages differ
                // from the file; clean page-cache pages come back from the file after the drop.
                if (s.Kind == VmaKind.File && (run.State & PageState.Swapped) == 0 && (run.State & PageState.File) != 0)
                    continue;
                ulong start = Math.Max(run.Start, s.Start), end = Math.Min(run.End, s.End);
                if (held is not null && Unchanged(run.State, s.Kind))
                {
                    PageRanges.Add(unchanged, start, end);
                    continue;
                }
                if (start != runEnd || forced != runForced)
                {
                    Cut();
                    (runStart, runForced) = (start, forced);
                }
                runEnd = end;
                saved += end - start;
            }
            if (!any)
                continue;
            if (drop.Count > 0 && drop[^1].End == s.Start)
                drop[^1] = (drop[^1].Start, s.End);
            else
                drop.Add((s.Start, s.End));
            total += saved;
            var prot = (ushort)s.Protection;
            vmas.Add(new ImageVma(s.Start, s.End, prot, s.Kind, s.Offset, saved));
            if (saved == 0)
                continue;
            withPages++;
            if (_log.DebugEnabled)
                _log.Debug($"  {s.Start:x16}..{s.End:x16}  {VmaSelector.ShortName(s.Kind)} {saved / 1024,6} kB");
        }
        Cut();
        var kept = held is null ? null : PageRanges.Intersect(unchanged, held);
        _log.Info($"{withPages} VMAs with pages to save, {total / 1024} kB in {records.Count} records"
            + (kept is null ? "" : $"; {PageRanges.Bytes(kept) / 1024} kB unchanged, kept from the older images"));
        _log.Debug($"page scan by {(scanner.UsesScanIoctl ? "PAGEMAP_SCAN" : "/proc/PID/pagemap")}");
        return new CheckpointPlan(records, vmas, total, drop) { Kept = kept };
    }

    /// <summary>
    /// A page that has not changed since its restore: write-protected then and not written since,
    /// and an anonymous page (a page-cache page was never saved). A page under a file mapping
    /// counts only while present: a swapped-out entry there may be the kernel's marker for a page
    /// the process discarded (its file content shows again), which must not come back from an image.
    /// </summary>
    private static bool Unchanged(PageState state, VmaKind kind) =>
        (state & (PageState.Tracked | PageState.Written | PageState.File)) == PageState.Tracked
        && ((state & PageState.Present) != 0 || kind != VmaKind.File);

    /// <summary>
    /// The present and swapped pages of the selected VMAs, in address order: one PAGEMAP_SCAN over
    /// the whole span they cover where the kernel has it (it skips what is not mapped), else
    /// /proc/PID/pagemap read for each run of adjacent VMAs.
    /// </summary>
    private static List<PageRun> Scan(PagemapScanner scanner, List<SelectedVma> selected)
    {
        if (selected.Count == 0)
            return [];
        if (scanner.ScanSparse(selected[0].Start, selected[^1].End) is { } all)
            return all;
        return VmaSelector.AdjacentSpans(selected.Select(s => (s.Start, s.End))).SelectMany(span => scanner.Scan(span.Start, span.End)).ToList();
    }

    /// <summary>Like <see cref="Scan"/>, with whether each page was written since it was write-protected.</summary>
    private static List<PageRun> ScanWrites(PagemapScanner scanner, List<SelectedVma> selected) =>
        selected.Count == 0 ? [] : scanner.ScanWrites(selected[0].Start, selected[^1].End)
            ?? throw new CheckpointException("an incremental checkpoint needs PAGEMAP_SCAN (Linux 6.7+), which this kernel lacks");

    /// <summary>A batch of pages read, with each record's place in the image and (plain images) its checksum.</summary>
    private sealed class Batch(PageBuffer pages)
    {
        public AlignedBuffer Buffer => pages.Buffer;

        /// <summary>Batches are numbered in file order from 0.</summary>
        public int Number => pages.Number;

        public List<(PlannedRecord Record, int Offset, ulong Checksum, PageSlot Slot)> Records { get; } = [];
    }

    /// <summary>A batch of encoded records, in <see cref="Output"/> one after the other.</summary>
    private sealed record EncodedBatch(int Number, AlignedBuffer Output, List<RecordHeader> Records);

    public void Write(CheckpointPlan plan, CancellationToken cancel)
    {
        string path = ImagePath;
        if (File.Exists(path))
        {
            // No live checkpoint can own it: its target would be traced and refused above.
            _log.Info($"removing stale image {path}");
            File.Delete(path);
        }
        int pageSize = Environment.SystemPageSize;
        // An incremental image holds scattered pages: records back to back, not a padding page each.
        bool packed = _options.Codec != Codec.None || _options.Encryption != Encryption.None || Parent is not null;
        var flags = (_options.IncludeFileMappings ? ImageFlags.FilePages : ImageFlags.None)
            | (_options.Checksum ? ImageFlags.Digest : ImageFlags.None)
            | (packed ? ImageFlags.Packed : ImageFlags.None);
        if (Parent is not null)
            flags |= ImageFlags.Incremental;
        var header = new ImageHeader(Pid, pageSize, Memcr.Linux.Arch.CpuArchitecture.Current.ElfMachine, flags, _imageId, DateTimeOffset.UtcNow)
        {
            Codec = _options.Codec,
            Encryption = _options.Encryption,
            ParentId = Parent?.Id ?? 0,
            ChainDepth = Parent?.Depth ?? 0,
        };
        ImageCipher? cipher = null;
        if (_key is { } key)
            (cipher, header) = ImageCipher.ForNewImage(header, key);
        using var cipherScope = cipher;
        if (packed)
            _log.Debug($"records: {_options.Codec} ({Compression.Implementations}), {ImageCipher.Name(_options.Encryption)}");
        // Buffers are granted before the image is made: in a busy service this may wait for others.
        var (least, wanted) = CheckpointBuffers.Ask(packed, _options.EncodeThreads, pageSize);
        using var grant = (_options.Budget ?? new MemoryBudget()).Acquire(least, wanted, cancel);
        var layout = CheckpointBuffers.For(grant, packed, _options.EncodeThreads, pageSize);
        _log.Debug($"buffers: {grant.Bytes >> 10} kB granted; {layout}");

        using var stream = new FileStream(path, new FileStreamOptions
        {
            Mode = FileMode.CreateNew,
            Access = FileAccess.ReadWrite,
            Share = FileShare.Read,
            UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite,
        });
        ImageCreated = true;
        var file = stream.SafeFileHandle;
        // The size is known up front unless records are compressed: reserve it, so that a full disk
        // is found before any page is read. (A compressed image that does not fit fails while written.)
        if (_options.Codec == Codec.None)
        {
            int overhead = _options.Encryption == Encryption.None ? 0 : ImageFormat.TagSize;
            long expected = ImageWriter.SizeFor(plan.Vmas.Count, plan.Records.Select(r => r.Length + overhead), pageSize, packed, Parent is null ? null : plan.Kept?.Count ?? 0);
            try
            {
                FileOps.Preallocate(file, ImageFormat.AlignUp(expected, pageSize), path);
            }
            catch (SyscallException e) when (e.Errno == Errno.ENOSPC)
            {
                throw new CheckpointException(
                    $"not enough space in {_options.DumpDir} for the {expected / 1024} kB image of pid {Pid} (fallocate: no space left on device); the target was left running untouched");
            }
        }
        // Pages go through O_DIRECT where the file system allows it: no page cache to fill with
        // dirty pages (and then write back and evict), and no fresh memory to fault in for it.
        using var direct = _options.KeepImageCached ? null : FileOps.OpenDirect(path, write: true);
        _log.Debug(direct is null ? "writing pages through the page cache" : "writing pages with O_DIRECT");
        using var writer = new ImageWriter(file, path, header, direct, layout.StagingBytes);
        writer.WriteVmaTable(plan.Vmas);

        var buffers = new List<IDisposable>();
        using var free = new BufferPool(layout.Reads, layout.ReadBytes);
        using var full = new BlockingCollection<Batch>(layout.Reads);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancel);
        Exception? writeError = null;
        void Fail(Exception e)
        {
            Interlocked.CompareExchange(ref writeError, e, null);
            stop.Cancel();
        }
        var threads = new List<Thread>();
        try
        {
            if (packed)
                threads.AddRange(PackedWriters(writer, cipher, layout, free, full, buffers, Fail, stop.Token));
            else
                threads.AddRange(PlainWriters(writer, file, direct is not null, free, full, Fail, stop.Token));
            threads.ForEach(t => t.Start());

            try
            {
                ReadBatches(plan, writer, free, full, stop.Token);
            }
            catch (OperationCanceledException) when (writeError is not null)
            {
            }
            finally
            {
                full.CompleteAdding();
                threads.ForEach(t => t.Join());
            }
        }
        finally
        {
            foreach (var b in buffers)
                b.Dispose();
        }
        if (writeError is not null)
            throw ImageWriteError(writeError);
        cancel.ThrowIfCancellationRequested();
        try
        {
            writer.Finish(Parent is null ? null : plan.Kept ?? []);
            FileOps.Truncate(file, writer.Length, path);
        }
        catch (IOException e)
        {
            throw ImageWriteError(e);
        }
        ImageBytes = writer.Length;
        SavedBytes = writer.PageBytes;
        StoredBytes = writer.StoredBytes;
    }

    /// <summary>Plain images: writer threads put each record straight from the read buffer in its reserved place.</summary>
    private List<Thread> PlainWriters(ImageWriter writer, Microsoft.Win32.SafeHandles.SafeFileHandle file, bool direct, BufferPool free,
        BlockingCollection<Batch> full, Action<Exception> fail, CancellationToken stop)
    {
        // Two writers keep two direct writes in flight; through the page cache one is enough
        // (buffered writes to one file are serialised by the kernel anyway).
        long kicked = 0;
        return Enumerable.Range(0, direct ? 2 : 1).Select(n => new Thread(() =>
        {
            try
            {
                foreach (var batch in full.GetConsumingEnumerable(stop))
                {
                    foreach (var (record, offset, checksum, slot) in batch.Records)
                        writer.WritePages(slot, batch.Buffer.Memory.Slice(offset, record.Length), checksum);
                    free.Return(batch.Buffer);
                    if (!direct && !_options.KeepImageCached && batch.Records[^1].Slot.HeaderOffset - kicked >= WritebackStep)
                    {
                        long upTo = batch.Records[^1].Slot.HeaderOffset;
                        FileOps.StartWriteback(file, kicked, upTo - kicked);
                        kicked = upTo;
                    }
                }
            }
            catch (OperationCanceledException)
            {
            }
            catch (Exception e)
            {
                fail(e);
            }
        })
        { Name = $"memcr image writer {n}", IsBackground = true }).ToList();
    }

    /// <summary>
    /// Packed images: encoder threads compress and encrypt batches in parallel into output buffers;
    /// one writer thread appends them to the image in file order.
    /// </summary>
    private List<Thread> PackedWriters(ImageWriter writer, ImageCipher? cipher, CheckpointBuffers layout, BufferPool free,
        BlockingCollection<Batch> full, List<IDisposable> owned, Action<Exception> fail, CancellationToken stop)
    {
        int encoders = layout.Encoders;
        int outputBytes = CheckpointBuffers.OutputBytes(layout.ReadBytes, Environment.SystemPageSize);
        var outputs = new BlockingCollection<AlignedBuffer>(layout.Outputs);
        var encoded = new BlockingCollection<EncodedBatch>(layout.Outputs);
        owned.Add(outputs);
        owned.Add(encoded);
        for (int i = 0; i < layout.Outputs; i++)
        {
            var b = new AlignedBuffer(outputBytes, Environment.SystemPageSize);
            owned.Add(b);
            outputs.Add(b, CancellationToken.None);
        }
        int running = encoders;
        var threads = Enumerable.Range(0, encoders).Select(n => new Thread(() =>
        {
            using var encoder = new RecordEncoder(_imageId, _options.Codec, cipher?.Clone());
            try
            {
                while (true)
                {
                    // The output buffer first, then the batch: batches are then taken in order by
                    // encoders that can finish them, and the writer, which waits for the next batch
                    // in order, can never have every output buffer while that batch has none.
                    var output = outputs.Take(stop);
                    if (!full.TryTake(out var batch, Timeout.Infinite, stop))
                        break;
                    var input = batch.Buffer.GetSpan();
                    var into = output.GetSpan();
                    var headers = new List<RecordHeader>(batch.Records.Count);
                    int used = 0;
                    foreach (var (record, offset, _, slot) in batch.Records)
                    {
                        var h = encoder.Encode(record.Address, slot.Sequence, input.Slice(offset, record.Length), into[used..]);
                        headers.Add(h);
                        used += h.StoredLength;
                    }
                    free.Return(batch.Buffer);
                    encoded.Add(new EncodedBatch(batch.Number, output, headers), stop);
                }
            }
            catch (OperationCanceledException)
            {
            }
            catch (Exception e)
            {
                fail(e);
            }
            finally
            {
                if (Interlocked.Decrement(ref running) == 0)
                    encoded.CompleteAdding();
            }
        })
        { Name = $"memcr image encoder {n}", IsBackground = true }).ToList();

        threads.Add(new Thread(() =>
        {
            try
            {
                // Batches come out of the encoders in any order; the image takes them in order.
                var waiting = new Dictionary<int, EncodedBatch>();
                int next = 0;
                foreach (var batch in encoded.GetConsumingEnumerable(stop))
                {
                    waiting.Add(batch.Number, batch);
                    while (waiting.Remove(next, out var ready))
                    {
                        var span = ready.Output.GetSpan();
                        int at = 0;
                        foreach (var h in ready.Records)
                        {
                            writer.AppendRecord(h, span.Slice(at, h.StoredLength));
                            at += h.StoredLength;
                        }
                        outputs.Add(ready.Output, stop);
                        next++;
                    }
                }
            }
            catch (OperationCanceledException)
            {
            }
            catch (Exception e)
            {
                fail(e);
            }
        })
        { Name = "memcr image writer", IsBackground = true });
        return threads;
    }

    private CheckpointException ImageWriteError(Exception e) =>
        new($"cannot write image {ImagePath}: {e.Message}; the target was left running untouched", e);

    /// <summary>Reads the planned records in batches, checksums them, and hands them to the writer.</summary>
    private void ReadBatches(CheckpointPlan plan, ImageWriter writer, BufferPool free, BlockingCollection<Batch> full, CancellationToken cancel)
    {
        bool packed = writer.Header.Packed;
        var segments = plan.Records.Select(r => new PageSegment(r.Address, r.Length, r.Forced)).ToList();
        new PageReader(_memory).Read(segments, free.Take, pages =>
        {
            var batch = new Batch(pages);
            var span = pages.Buffer.GetSpan();
            for (int i = 0; i < pages.Segments.Count; i++)
            {
                int index = pages.FirstSegment + i;
                var r = plan.Records[index];
                int offset = pages.Segments[i].Offset;
                // Packed records get their place when written (their size is known only then); their number now.
                var slot = packed ? new PageSlot(0, (ulong)index + 1, r.Address, r.Length) : writer.ReservePages(r.Address, r.Length);
                ulong checksum = packed ? 0 : ImageWriter.Checksum(span.Slice(offset, r.Length), _imageId);
                batch.Records.Add((r, offset, checksum, slot));
            }
            full.Add(batch, cancel);
        }, cancel);
    }

    /// <summary>Reopens the written image and checks that it is complete before anything is dropped.</summary>
    public void VerifyWritten(CheckpointPlan plan)
    {
        try
        {
            using var image = ImageReader.Open(ImagePath, key: _key);
            if (image.Header.ImageId != _imageId || image.Index.Count != plan.Records.Count || image.PageBytes != plan.Bytes || image.StoredBytes != StoredBytes)
                throw new CheckpointException($"image {ImagePath} does not hold what was written; the target was left running untouched");
        }
        catch (ImageFormatException e)
        {
            throw new CheckpointException($"image {ImagePath} is not complete after writing: {e.Problem}; the target was left running untouched", e);
        }
    }
}
