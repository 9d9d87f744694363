using System.Collections.Concurrent;
using System.Diagnostics;
using System.Security.Cryptography;
using Memcr.Image;
using Memcr.Linux;
using Memcr.Linux.Arch;
using Memcr.Linux.Memory;
using Memcr.Linux.Proc;
using Memcr.Linux.Ptrace;

namespace Memcr.Engine;

/// <summary>
/// One checkpointed process: frozen, its memory saved to an image and dropped, until
/// <see cref="Restore"/> writes it back and lets it run. Must be used from one thread from
/// <see cref="Checkpoint"/> to <see cref="Restore"/> (that thread is the ptrace tracer).
/// </summary>
public sealed class CheckpointSession : IDisposable
{
    /// <summary>Largest record: pages of one run are split into records of at most this size.</summary>
    private const int RecordBytes = 1 << 20;

    /// <summary>One process_vm_readv call fills a buffer of this size (up to IOV_MAX records).</summary>
    private const int BatchBytes = ReadBufferBytes;

    /// <summary>Size of a read buffer (see <see cref="CheckpointOptions.ReadBuffers"/>).</summary>
    public const int ReadBufferBytes = 4 << 20;

    private const int Buffers = 6;

    /// <summary>Writeback of the image is started every this many bytes so that the final fdatasync is short.</summary>
    private const long WritebackStep = 64L << 20;

    private readonly CheckpointOptions _options;
    private readonly Log _log;
    private readonly Tracer _tracer;
    private readonly RemoteMemory _memory;
    private readonly CpuArchitecture _arch = CpuArchitecture.Current;
    private readonly ulong _imageId;
    private readonly byte[]? _key;
    private List<SelectedVma> _dropTargets = [];
    private bool _dropped;
    private bool _imageExists;
    private bool _over;

    private CheckpointSession(CheckpointOptions options, Log log, Tracer tracer, ulong? imageId = null)
    {
        _imageId = imageId ?? BitConverter.ToUInt64(RandomNumberGenerator.GetBytes(8));
        _options = options;
        _log = log;
        _tracer = tracer;
        _memory = new RemoteMemory(options.Pid);
        _key = options.Key;
        if (options.Encryption != Encryption.None && imageId is null)
        {
            // Without a key file the key is random and lives only in this process, like the original's.
            _key = options.Key ?? RandomNumberGenerator.GetBytes(ImageCipher.KeyLength(options.Encryption));
        }
    }

    public int Pid => _options.Pid;

    /// <summary>The random id of this checkpoint's image (its header's image id).</summary>
    public ulong ImageId => _imageId;

    public string ImagePath => _options.ImagePath;

    public RssStats Before { get; private set; }

    public RssStats After { get; private set; }

    public long ImageBytes { get; private set; }

    public ulong SavedBytes { get; private set; }

    /// <summary>Bytes the page records take in the image (after compression).</summary>
    public ulong StoredBytes { get; private set; }

    /// <summary>
    /// Freezes the target, saves its memory and drops it. On failure the target is left running as
    /// it was (or, if memory had been dropped already, given it back first) and the error rethrown.
    /// </summary>
    public static CheckpointSession Checkpoint(CheckpointOptions options, Log log, CancellationToken cancel = default)
    {
        TargetValidator.Validate(options.Pid);
        TargetValidator.ValidateDumpDir(options.DumpDir);
        log.Step($"seizing target pid {options.Pid}");
        Tracer tracer;
        try
        {
            tracer = Tracer.Seize(options.Pid, log.Debug);
        }
        catch (ProcessGoneException e)
        {
            throw new CheckpointException(e.Message, e);
        }
        catch (SyscallException e)
        {
            throw new CheckpointException($"cannot freeze pid {options.Pid}: {e.Message}", e);
        }
        int threads = tracer.Threads.Count(t => t.State != TraceState.Gone);
        log.Info($"{threads} {(threads == 1 ? "thread" : "threads")}");
        var session = new CheckpointSession(options, log, tracer);
        try
        {
            session.Run(cancel);
            return session;
        }
        catch (Exception e)
        {
            session.Abort(e);
            if (e is CheckpointException or OperationCanceledException)
                throw;
            throw new CheckpointException($"checkpoint of pid {options.Pid} failed: {e.Message}; {session.Outcome()}", e);
        }
    }

    /// <summary>
    /// Takes over a process that another memcr checkpointed and left in a group stop when it died
    /// (found through the service journal): seizes it, keeps it stopped, and makes
    /// <see cref="Restore"/> write its memory back from the image <paramref name="imageId"/> and let it run.
    /// </summary>
    public static CheckpointSession Adopt(CheckpointOptions options, ulong imageId, Log log)
    {
        var status = TargetValidator.Validate(options.Pid);
        if (status.State != 'T')
            throw new CheckpointException($"pid {options.Pid} is not stopped (state {status.State}): it is not a checkpointed process waiting for its memory");
        Tracer tracer;
        try
        {
            tracer = Tracer.Seize(options.Pid, log.Debug);
        }
        catch (Exception e) when (e is ProcessGoneException or SyscallException)
        {
            throw new CheckpointException($"cannot take over pid {options.Pid}: {e.Message}", e);
        }
        tracer.TakeOverGroupStop();
        return new CheckpointSession(options, log, tracer, imageId)
        {
            _dropped = true,
            _imageExists = true,
            ImageBytes = File.Exists(options.ImagePath) ? new FileInfo(options.ImagePath).Length : 0,
        };
    }

    private string Outcome() => _tracer.IsAlive ? "the target was left running untouched" : "the target has gone";

    private void Run(CancellationToken cancel)
    {
        var smaps = ProcFs.ReadSmaps(Pid);
        var (selected, skipped) = VmaSelector.Select(smaps, _options.IncludeFileMappings);
        foreach (var s in skipped)
        {
            if (s.Reason.StartsWith("file mapping", StringComparison.Ordinal))
                _log.Debug($"skipping {s.Vma.Describe()}: {s.Reason}");
            else
                _log.Info($"skipping {s.Reason} VMA {s.Vma.Start:x16}..{s.Vma.End:x16} {s.Vma.Path}");
        }
        Before = RssStats.Read(Pid);
        ulong vss = selected.Aggregate(0UL, (sum, v) => sum + v.Vma.Length);
        _log.Info($"{selected.Count} candidate VMAs, VSS {vss / 1024} kB, RSS {Before.VmRss} kB");

        _log.Step("downloading pages");
        _startedDownload = _lap = Stopwatch.GetTimestamp();
        var plan = Plan(selected);
        Lap("page scan");
        cancel.ThrowIfCancellationRequested();
        WriteImage(plan, cancel);
        Lap("read and write");
        cancel.ThrowIfCancellationRequested();
        VerifyWritten(plan);
        Lap("image check");

        _options.BeforeDrop?.Invoke(this);
        // From here the target depends on the image. Hold it in a group stop first so that, should
        // memcr die, the target stays stopped rather than running on dropped memory.
        _tracer.HoldInGroupStop();
        Lap("group stop");
        Drop();
        Lap("drop");
        if (!_options.KeepImageCached)
        {
            using var file = File.OpenHandle(ImagePath, FileMode.Open, FileAccess.Read);
            FileOps.SyncAndEvict(file, ImagePath);
            Lap("writeback and eviction");
        }
        _log.Info($"image {ImageBytes / 1024} kB: {SavedBytes / 1024} kB of pages in {plan.Records.Count} records"
            + (_options.Codec == Codec.None ? "" : $", {_options.Codec} {StoredBytes / 1024} kB stored (ratio {(double)SavedBytes / Math.Max(1, StoredBytes):F2})"));
        _log.Info($"download took {(long)Stopwatch.GetElapsedTime(_startedDownload).TotalMilliseconds} ms");
        _log.Info($"stored at {ImagePath}");
        After = RssStats.Read(Pid);
        RssStats.Show(_log, Before, After);
    }

    private long _startedDownload;
    private long _lap;

    private void Lap(string what)
    {
        long now = Stopwatch.GetTimestamp();
        _log.Debug($"{what}: {Stopwatch.GetElapsedTime(_lap, now).TotalMilliseconds:F1} ms");
        _lap = now;
    }

    /// <summary>A record to save: pages [Address, Address + Length) of one VMA.</summary>
    private readonly record struct PlannedRecord(ulong Address, int Length, bool Forced);

    private sealed record CheckpointPlan(List<PlannedRecord> Records, List<ImageVma> Vmas, ulong Bytes);

    private CheckpointPlan Plan(List<SelectedVma> selected)
    {
        var records = new List<PlannedRecord>();
        var vmas = new List<ImageVma>();
        ulong total = 0;
        using var scanner = new PagemapScanner(Pid);
        foreach (var s in selected)
        {
            var runs = scanner.Scan(s.Vma.Start, s.Vma.End);
            if (runs.Count == 0)
                continue;
            _dropTargets.Add(s);
            // Unreadable mappings (PROT_NONE, exec-only) and -m go through /proc/PID/mem.
            bool forced = _options.UseProcMem || !s.Vma.IsReadable;
            ulong saved = 0;
            foreach (var run in runs)
            {
                // In a private file mapping only written (copy-on-write, now anonymous) pages differ
                // from the file; clean page-cache pages come back from the file after the drop.
                if (s.Kind == VmaKind.File && (run.State & PageState.Swapped) == 0 && (run.State & PageState.File) != 0)
                    continue;
                for (ulong at = run.Start; at < run.End; at += RecordBytes)
                {
                    int len = (int)Math.Min(RecordBytes, run.End - at);
                    records.Add(new PlannedRecord(at, len, forced));
                    saved += (ulong)len;
                }
            }
            total += saved;
            var prot = (ushort)s.Vma.Protection;
            vmas.Add(new ImageVma(s.Vma.Start, s.Vma.End, prot, s.Kind, s.Vma.Offset, saved));
            if (saved > 0)
                _log.Info($"  {s.Vma.Start:x16}..{s.Vma.End:x16}  {VmaSelector.ShortName(s.Kind)} {saved / 1024,6} kB");
        }
        _log.Debug($"page scan by {(scanner.UsesScanIoctl ? "PAGEMAP_SCAN" : "/proc/PID/pagemap")}: {records.Count} records, {total} bytes");
        return new CheckpointPlan(records, vmas, total);
    }

    private sealed class Batch(AlignedBuffer buffer, int number)
    {
        public AlignedBuffer Buffer { get; } = buffer;

        /// <summary>Batches are numbered in file order from 0.</summary>
        public int Number { get; } = number;

        public List<(PlannedRecord Record, int Offset, ulong Checksum, PageSlot Slot)> Records { get; } = [];
    }

    /// <summary>A batch of encoded records, in <see cref="Output"/> one after the other.</summary>
    private sealed record EncodedBatch(int Number, AlignedBuffer Output, List<RecordHeader> Records);

    private void WriteImage(CheckpointPlan plan, CancellationToken cancel)
    {
        string path = ImagePath;
        if (File.Exists(path))
        {
            // No live checkpoint can own it: its target would be traced and refused above.
            _log.Info($"removing stale image {path}");
            File.Delete(path);
        }
        int pageSize = Environment.SystemPageSize;
        bool packed = _options.Codec != Codec.None || _options.Encryption != Encryption.None;
        var flags = (_options.IncludeFileMappings ? ImageFlags.FilePages : ImageFlags.None)
            | (_options.Checksum ? ImageFlags.Digest : ImageFlags.None)
            | (packed ? ImageFlags.Packed : ImageFlags.None);
        var header = new ImageHeader(Pid, pageSize, _arch.ElfMachine, flags, _imageId, DateTimeOffset.UtcNow)
        {
            Codec = _options.Codec,
            Encryption = _options.Encryption,
        };
        ImageCipher? cipher = null;
        if (_key is { } key)
            (cipher, header) = ImageCipher.ForNewImage(header, key);
        using var cipherScope = cipher;
        if (packed)
            _log.Debug($"records: {_options.Codec} ({Compression.Implementations}), {ImageCipher.Name(_options.Encryption)}");

        using var stream = new FileStream(path, new FileStreamOptions
        {
            Mode = FileMode.CreateNew,
            Access = FileAccess.ReadWrite,
            Share = FileShare.Read,
            UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite,
        });
        _imageExists = true;
        var file = stream.SafeFileHandle;
        // The size is known up front unless records are compressed: reserve it, so that a full disk
        // is found before any page is read. (A compressed image that does not fit fails while written.)
        if (_options.Codec == Codec.None)
        {
            int overhead = _options.Encryption == Encryption.None ? 0 : ImageFormat.TagSize;
            long expected = ImageWriter.SizeFor(plan.Vmas.Count, plan.Records.Select(r => r.Length + overhead), pageSize, packed);
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
        using var writer = new ImageWriter(file, path, header, direct);
        writer.WriteVmaTable(plan.Vmas);

        var buffers = new List<IDisposable>();
        // Read buffers come from the service's shared pool, or from one of this checkpoint's own.
        if (_options.ReadBuffers is { Size: not BatchBytes } wrong)
            throw new ArgumentException($"read buffers of {wrong.Size} bytes; checkpoints read {BatchBytes} bytes at a time");
        using var ownPool = _options.ReadBuffers is null ? new BufferPool(Buffers, BatchBytes) : null;
        using var free = (_options.ReadBuffers ?? ownPool!).Borrow();
        using var full = new BlockingCollection<Batch>(Buffers);
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
                threads.AddRange(PackedWriters(writer, cipher, free, full, buffers, Fail, stop.Token));
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
            writer.Finish();
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
    private List<Thread> PlainWriters(ImageWriter writer, Microsoft.Win32.SafeHandles.SafeFileHandle file, bool direct, BufferPool.Lease free,
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
    private List<Thread> PackedWriters(ImageWriter writer, ImageCipher? cipher, BufferPool.Lease free,
        BlockingCollection<Batch> full, List<IDisposable> owned, Action<Exception> fail, CancellationToken stop)
    {
        int encoders = _options.EncodeThreads;
        int outputBytes = BatchBytes + 1024 * ImageFormat.TagSize;
        var outputs = new BlockingCollection<AlignedBuffer>(encoders + 2);
        var encoded = new BlockingCollection<EncodedBatch>(encoders + 2);
        owned.Add(outputs);
        owned.Add(encoded);
        for (int i = 0; i < encoders + 2; i++)
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
    private void ReadBatches(CheckpointPlan plan, ImageWriter writer, BufferPool.Lease free, BlockingCollection<Batch> full, CancellationToken cancel)
    {
        var transfers = new List<Transfer>(1024);
        bool packed = writer.Header.Packed;
        int index = 0;
        int number = 0;
        while (index < plan.Records.Count)
        {
            var batch = new Batch(free.Take(cancel), number++);
            transfers.Clear();
            int used = 0;
            nint basePtr = batch.Buffer.Pointer;
            while (index < plan.Records.Count && transfers.Count < 1024)
            {
                var r = plan.Records[index];
                if (used + r.Length > BatchBytes)
                    break;
                var t = new Transfer(r.Address, basePtr + used, r.Length);
                if (r.Forced)
                    _memory.ReadMem(t);
                else
                    transfers.Add(t);
                // Packed records get their place when written (their size is known only then); their number now.
                var slot = packed ? new PageSlot(0, (ulong)index + 1, r.Address, r.Length) : writer.ReservePages(r.Address, r.Length);
                batch.Records.Add((r, used, 0, slot));
                used += r.Length;
                index++;
            }
            if (transfers.Count > 0)
                _memory.ReadV(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(transfers));
            var span = batch.Buffer.GetSpan();
            for (int i = 0; i < batch.Records.Count && !packed; i++)
            {
                var (record, offset, _, slot) = batch.Records[i];
                batch.Records[i] = (record, offset, ImageWriter.Checksum(span.Slice(offset, record.Length), _imageId), slot);
            }
            full.Add(batch, cancel);
        }
    }

    /// <summary>Reopens the written image and checks that it is complete before anything is dropped.</summary>
    private void VerifyWritten(CheckpointPlan plan)
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

    /// <summary>madvise(MADV_DONTNEED) of every VMA that had pages, executed by a target thread.</summary>
    private void Drop()
    {
        if (_dropTargets.Count == 0)
            return;
        var maps = ProcFs.ReadMaps(Pid);
        ulong insn = RemoteSyscall.FindSyscallInstruction(Pid, maps, _arch, _memory);
        using var remote = RemoteSyscall.Open(_tracer, _arch, insn);
        foreach (var s in _dropTargets)
        {
            _dropped = true;
            long r = remote.Call(_arch.Syscalls.Madvise, s.Vma.Start, s.Vma.Length, Madvise.DontNeed);
            if (r < 0)
            {
                throw new SyscallException("madvise(MADV_DONTNEED) in the target",
                    $"pid {Pid} [{s.Vma.Start:x}-{s.Vma.End:x}]", (int)-r);
            }
        }
    }

    /// <summary>
    /// Checks on a frozen target: throws <see cref="TargetTerminatedException"/> if it has died, or
    /// lets it die if a signal that terminates it is pending (kill PID must work on a parked app).
    /// </summary>
    public void Poll()
    {
        if (_over)
            return;
        if (_tracer.ReapAll() is { } exit)
            Terminated(exit);
        ProcStatus status;
        try
        {
            status = ProcFs.ReadStatus(Pid);
        }
        catch (ProcessGoneException)
        {
            Terminated(_tracer.ReapAll() ?? new WaitStatus(Signals.SIGKILL));
            return;
        }
        ulong pending = (status.ShdPnd | status.SigPnd) & ~status.SigIgn & ~status.SigCgt;
        for (int sig = 1; sig <= Signals.Max; sig++)
        {
            // SIGKILL needs no help: the kernel ends a traced process at once.
            if ((pending & Signals.Bit(sig)) == 0 || !Signals.TerminatesByDefault(sig) || sig == Signals.SIGKILL)
                continue;
            int? tid = ThreadNotBlocking(sig);
            if (tid is null)
                continue;
            _log.Info($"{Signals.Name(sig)} is pending for pid {Pid} and terminates it: letting it die");
            try
            {
                _tracer.DieOfPendingSignal(tid.Value, sig);
            }
            catch (SyscallException e) when (e.Errno == Errno.ESRCH)
            {
                // Killed meanwhile by something else.
            }
            Terminated(_tracer.ReapAll() ?? new WaitStatus(sig));
        }
    }

    private int? ThreadNotBlocking(int sig)
    {
        foreach (var t in _tracer.Threads.Where(t => t.State != TraceState.Gone))
        {
            try
            {
                if ((ProcFs.ReadTaskStatus(Pid, t.Tid).SigBlk & Signals.Bit(sig)) == 0)
                    return t.Tid;
            }
            catch (ProcessGoneException)
            {
            }
        }
        return null;
    }

    private void Terminated(WaitStatus exit)
    {
        _over = true;
        DeleteImage();
        string how = exit.Signaled ? $"terminated by {Signals.Name(exit.TermSignal)}" : $"exited with status {exit.ExitCode}";
        throw new TargetTerminatedException(Pid, how);
    }

    /// <summary>
    /// Writes every page back from the image (after checking all of it) and lets the target run.
    /// If the image cannot be used, the target is killed (it must never run on dropped memory) and
    /// the image removed. If a signal that terminates the target is pending, the target dies of it
    /// and <see cref="TargetTerminatedException"/> is thrown, as <see cref="Poll"/> does.
    /// </summary>
    public TimeSpan Restore()
    {
        if (_over)
            throw new InvalidOperationException($"pid {Pid} is not checkpointed");
        // A signal that ends the process may have come just before the restore, between two polls:
        // it ends the process now, as it would have a moment later, whatever the timing.
        Poll();
        _log.Step("uploading pages");
        var started = Stopwatch.GetTimestamp();
        try
        {
            WriteBack();
        }
        catch (Exception e) when (e is ImageFormatException or IOException or CheckpointException or UnauthorizedAccessException)
        {
            _over = true;
            _tracer.Kill();
            DeleteImage();
            string why = e is ImageFormatException f ? f.Message : e.Message;
            throw new CheckpointException($"cannot restore pid {Pid}: {why}; pid {Pid} was killed with SIGKILL because its memory cannot be given back", e);
        }
        _log.Step("unseizing target");
        _tracer.Detach();
        _over = true;
        DeleteImage();
        var took = Stopwatch.GetElapsedTime(started);
        _log.Info($"upload took {(long)took.TotalMilliseconds} ms");
        return took;
    }

    private void WriteBack()
    {
        _lap = Stopwatch.GetTimestamp();
        // The image is read twice, to verify it and to write it back. The first pass leaves it in
        // the page cache, the second evicts each batch once it is in the target: the memory in use
        // stays about the size of the target's, and the disk is read once.
        using var image = ImageReader.Open(ImagePath, key: _key);
        using var cache = File.OpenHandle(ImagePath, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        if (image.Header.ImageId != _imageId)
            throw new ImageFormatException(ImagePath, 40, "this is not the image this checkpoint wrote (it was replaced)");
        if (image.Header.Pid != Pid)
            throw new ImageFormatException(ImagePath, 24, $"image is of pid {image.Header.Pid}, not {Pid}");
        if (image.Header.Encryption != Encryption.None && _key is null)
            throw new ImageFormatException(ImagePath, 23, "the image is encrypted and there is no key for it: a random key lives only in the memcr that made the image (a persistent one comes from --key-file)");
        if (image.Header.PageSize != Environment.SystemPageSize)
            throw new ImageFormatException(ImagePath, 16, $"image page size {image.Header.PageSize} differs from this system's {Environment.SystemPageSize}");
        // Reading is I/O-bound: keep more reads in flight than there are cores, with large readahead.
        FileOps.AdviseSequential(cache);
        image.Verify(_options.Parallelism * 2);
        Lap("image verification");
        if (!_dropped)
            return; // nothing was dropped: the target's memory is intact
        Action<PageBatch>? evict = _options.KeepImageCached ? null : b => FileOps.Evict(cache, ImagePath, b.Start, b.Length);
        new EagerPageRestorer(_memory, _options.Parallelism, evict, _options.Checksum).Restore(image, ProcFs.ReadMaps(Pid));
        Lap("pages written back");
    }

    /// <summary>Undoes a checkpoint that failed part-way.</summary>
    private void Abort(Exception cause)
    {
        _over = true;
        try
        {
            if (_dropped && _tracer.IsAlive)
            {
                _log.Error($"checkpoint failed after memory was dropped ({cause.Message}); writing it back");
                WriteBack();
            }
            _tracer.Detach();
        }
        catch (Exception e)
        {
            _log.Error($"cannot give pid {Pid} its memory back: {e.Message}; killing it with SIGKILL");
            _tracer.Kill();
        }
        DeleteImage();
    }

    private void DeleteImage()
    {
        if (!_imageExists)
            return;
        try
        {
            File.Delete(ImagePath);
        }
        catch (IOException e)
        {
            _log.Error($"cannot remove {ImagePath}: {e.Message}");
        }
        _imageExists = false;
    }

    public void Dispose()
    {
        if (!_over)
            Restore();
        _memory.Dispose();
    }
}
