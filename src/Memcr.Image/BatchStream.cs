using System.Collections.Concurrent;
using System.Runtime.ExceptionServices;
using Memcr.Linux;
using Memcr.Linux.Memory;
using Microsoft.Win32.SafeHandles;

namespace Memcr.Image;

/// <summary>A batch of page records read by a <see cref="BatchStream"/>, not checked yet.</summary>
public sealed class FilledBatch
{
    internal FilledBatch(PageBatch batch, AlignedBuffer buffer, int offset, bool pooled)
    {
        Batch = batch;
        Buffer = buffer;
        Offset = offset;
        Pooled = pooled;
    }

    public PageBatch Batch { get; }

    internal AlignedBuffer Buffer { get; }

    /// <summary>Where the batch's first byte is in the buffer (an O_DIRECT read starts on the block before it).</summary>
    private int Offset { get; }

    internal bool Pooled { get; }

    /// <summary>The batch's bytes, from <see cref="PageBatch.Start"/> in the file.</summary>
    public Span<byte> Data => Buffer.GetSpan().Slice(Offset, Batch.Length);

    /// <summary>Address of <see cref="Data"/>'s first byte.</summary>
    public nint Pointer => Buffer.Pointer + Offset;
}

/// <summary>
/// Reads the page batches of an image in file order on two threads of its own, ahead of the threads
/// that check, decode and use them, into at most a fixed number of buffers: reading the disk
/// overlaps with everything else and memory stays bounded. Reads are large and sequential, and
/// bypass the page cache (O_DIRECT) unless the image is to stay cached or the file system refuses;
/// a buffered read is evicted from the page cache once its batch is returned, unless the image is
/// to stay cached. Records the caller no longer wants (asked just before their batch is read) are
/// not read: a batch is read as the runs of wanted records in it, each a batch of its own.
/// </summary>
public sealed class BatchStream : IDisposable
{
    /// <summary>
    /// Bytes of the file one read takes when memory allows (a larger record is read alone, into a
    /// buffer of its own): four plain 1 MiB records with their padding pages. Reads of about 4 MiB ran here at
    /// 1.5–2.5 times the speed of 3 MiB ones.
    /// </summary>
    public const int ReadBytes = (4 << 20) + (64 << 10);

    /// <summary>Reads in flight unless told otherwise: a second one keeps the disk busy while the first one's result is handed over.</summary>
    public const int DefaultReaders = 2;

    private readonly ImageReader _image;
    private readonly List<PageBatch> _batches;
    private readonly SafeFileHandle _file;
    private readonly bool _keepCache;
    private readonly BufferPool _pool;
    private readonly BlockingCollection<FilledBatch> _filled;
    private readonly CancellationTokenSource _stop = new();
    private readonly Thread[] _readers;
    private readonly int _align;
    private readonly Func<int, bool>? _wanted;
    private int _next = -1;
    private int _reading;
    private Exception? _error;

    /// <summary>
    /// Starts reading the image's page records in batches of whole records, up to
    /// <paramref name="readBytes"/> of the file and <paramref name="maxPageBytes"/> of pages each,
    /// into <paramref name="buffers"/> buffers (of <paramref name="readBytes"/> and a page on either
    /// side: an O_DIRECT read is aligned), with <paramref name="readers"/> reads in flight. With
    /// <paramref name="keepCache"/> the image is read through the page cache and left there.
    /// Records <paramref name="wanted"/> (given a record's index) says are not wanted are skipped.
    /// </summary>
    public BatchStream(ImageReader image, int readBytes, int maxPageBytes, int buffers, bool keepCache, Func<int, bool>? wanted = null, int readers = DefaultReaders)
    {
        _image = image;
        _wanted = wanted;
        _batches = image.PlanBatches(readBytes, maxPageBytes);
        _keepCache = keepCache;
        _file = image.Reopen(direct: !keepCache, out bool direct);
        Direct = direct;
        _align = direct ? image.Header.PageSize : 1;
        if (!direct)
            FileOps.AdviseSequential(_file);
        _pool = new BufferPool(buffers, readBytes + 2 * image.Header.PageSize);
        _filled = new BlockingCollection<FilledBatch>(buffers);
        _readers = new Thread[Math.Clamp(readers, 1, buffers)];
        _reading = _readers.Length;
        for (int i = 0; i < _readers.Length; i++)
        {
            _readers[i] = new Thread(Read) { Name = $"memcr image reader {i}", IsBackground = true };
            _readers[i].Start();
        }
    }

    /// <summary>The image is read with O_DIRECT.</summary>
    public bool Direct { get; }

    /// <summary>The batches the stream reads, in file order.</summary>
    public IReadOnlyList<PageBatch> Batches => _batches;

    private void Read()
    {
        try
        {
            for (int next = Interlocked.Increment(ref _next); next < _batches.Count; next = Interlocked.Increment(ref _next))
            {
                foreach (var batch in WantedRuns(_batches[next]))
                    ReadBatch(batch);
            }
        }
        catch (OperationCanceledException) when (_stop.IsCancellationRequested)
        {
        }
        catch (Exception e)
        {
            Interlocked.CompareExchange(ref _error, e, null);
            _stop.Cancel();
        }
        finally
        {
            if (Interlocked.Decrement(ref _reading) == 0)
                _filled.CompleteAdding();
        }
    }

    /// <summary>The runs of consecutive wanted records of a planned batch (the batch itself when all are wanted).</summary>
    private List<PageBatch> WantedRuns(PageBatch planned)
    {
        if (_wanted is null)
            return [planned];
        var runs = new List<PageBatch>(1);
        int end = planned.First + planned.Count;
        for (int i = planned.First; i < end; i++)
        {
            if (!_wanted(i))
                continue;
            int first = i;
            while (i + 1 < end && _wanted(i + 1))
                i++;
            runs.Add(first == planned.First && i + 1 == end ? planned : _image.RecordBatch(first, i + 1 - first));
        }
        return runs;
    }

    private void ReadBatch(PageBatch batch)
    {
        long start = batch.Start / _align * _align;
        long end = ImageFormat.AlignUp(batch.Start + batch.Length, _align);
        int length = (int)(end - start);
        bool pooled = length <= _pool.Size;
        var buffer = pooled ? _pool.Take(_stop.Token) : new AlignedBuffer(length, _image.Header.PageSize);
        var filled = new FilledBatch(batch, buffer, (int)(batch.Start - start), pooled);
        try
        {
            ReadFully(_file, buffer.Memory.Span[..length], start, batch.Start + batch.Length, _align, _image.Path);
            _filled.Add(filled, _stop.Token);
        }
        catch
        {
            Release(filled);
            throw;
        }
    }

    /// <summary>
    /// Reads from <paramref name="offset"/> into <paramref name="into"/>, at least up to
    /// <paramref name="needed"/>: an O_DIRECT read (<paramref name="align"/> above 1) covers whole
    /// blocks, and the file may end inside the last one. Anything shorter is a truncated image.
    /// </summary>
    internal static void ReadFully(SafeFileHandle file, Span<byte> into, long offset, long needed, int align, string path)
    {
        int done = 0;
        while (done < into.Length)
        {
            int n = RandomAccess.Read(file, into[done..], offset + done);
            done += n;
            if (offset + done >= needed && (n == 0 || align > 1))
                return;
            if (n == 0 || n % align != 0) // an O_DIRECT read stops short only at the end of the file
                throw new ImageFormatException(path, offset + done, "truncated: unexpected end of file in page records");
        }
    }

    /// <summary>
    /// The next batch, waiting for it to be read; false when every batch has been taken or the
    /// stream was stopped. Throws what stopped the reading (an I/O error, a truncated file).
    /// </summary>
    public bool TryTake(out FilledBatch batch)
    {
        try
        {
            if (_filled.TryTake(out batch!, Timeout.Infinite, _stop.Token))
                return true;
        }
        catch (OperationCanceledException)
        {
            batch = null!;
        }
        if (Volatile.Read(ref _error) is { } error)
            ExceptionDispatchInfo.Throw(error);
        return false;
    }

    /// <summary>Gives a batch's buffer back for the next read (and evicts its bytes from the page cache when read through it).</summary>
    public void Return(FilledBatch batch)
    {
        if (!Direct && !_keepCache)
            FileOps.Evict(_file, _image.Path, batch.Batch.Start, batch.Batch.Length);
        Release(batch);
    }

    private void Release(FilledBatch batch)
    {
        if (batch.Pooled)
            _pool.Return(batch.Buffer);
        else
            ((IDisposable)batch.Buffer).Dispose();
    }

    /// <summary>Stops reading: the consumers' next <see cref="TryTake"/> returns false.</summary>
    public void Stop() => _stop.Cancel();

    public void Dispose()
    {
        _stop.Cancel();
        foreach (var reader in _readers)
            reader.Join();
        while (_filled.TryTake(out var left))
            Release(left);
        _filled.Dispose();
        _pool.Dispose();
        _file.Dispose();
        _stop.Dispose();
    }
}
