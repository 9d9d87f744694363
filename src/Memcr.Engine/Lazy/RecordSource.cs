using Memcr.Image;
using Memcr.Linux.Memory;
using Microsoft.Win32.SafeHandles;

namespace Memcr.Engine.Lazy;

/// <summary>
/// Reads image records one batch at a time and gives their pages, checked and decoded: for the
/// records a lazy restore's faults need at once (and, before the process runs, those it writes
/// eagerly), by their numbers in <see cref="LazyImages"/>. Each record is checked (header, index
/// entry, payload checksum; then GCM tag and content checksum as it is decoded) before any of its
/// pages is handed out. It reads with O_DIRECT (unless the image is to stay cached) through a
/// handle of its own for each image (see LazyRestore for the I/O priority of those reads).
/// </summary>
internal sealed class RecordSource : IDisposable
{
    private readonly LazyImages _images;
    private readonly bool _keepCache;
    private readonly Dictionary<ImageReader, (SafeFileHandle Handle, int Align)> _handles = [];
    private AlignedBuffer? _file;
    private AlignedBuffer? _pages;
    private RecordDecoder? _decoder;
    /// <summary>The image <see cref="_decoder"/> decodes (its codec and key).</summary>
    private ImageReader? _decoderOf;
    private readonly Dictionary<int, nint> _where = [];

    public RecordSource(LazyImages images, bool keepCache)
    {
        _images = images;
        _keepCache = keepCache;
    }

    /// <summary>
    /// Opens every image and makes the read buffer now, before the process runs, for a record of
    /// any size they hold, and a whole huge page where the kernel has them: an O_DIRECT read into
    /// small pages is a segment per page (see <see cref="IoMemory"/>). Into a huge page made here,
    /// a 1 GiB process was all back in 0.84 times the eager restore's time instead of 0.91, touches
    /// waiting 5.7 ms at p99 instead of 7; made by the thread that answers faults once the process
    /// ran, that page left 6 ms gaps between the first reads and resume went over 10 ms in a third
    /// of the runs.
    /// </summary>
    public void Prepare()
    {
        int largest = 0;
        foreach (var image in _images.Images)
        {
            Handle(image);
            for (int i = 0; i < image.Index.Count; i++)
                largest = Math.Max(largest, image.RecordBatch(i).Length);
        }
        int page = _images.PageSize;
        long bytes = largest + 2L * page;
        if (IoMemory.HugePages)
            bytes = Math.Max(bytes, IoMemory.HugePageBytes);
        _file = Fit(_file, (int)Math.Min(bytes, int.MaxValue), page);
    }

    private (SafeFileHandle Handle, int Align) Handle(ImageReader image)
    {
        if (!_handles.TryGetValue(image, out var h))
        {
            var handle = image.Reopen(direct: !_keepCache, out bool direct);
            _handles[image] = h = (handle, direct ? image.Header.PageSize : 1);
        }
        return h;
    }

    /// <summary>Reads the batch that holds record <paramref name="number"/> and decodes its records; <see cref="Pages"/> then points at each one's pages.</summary>
    public void Load(int number)
    {
        var (image, record) = _images.At(number);
        var h = Handle(image);
        var batch = image.RecordBatch(record);
        int page = image.Header.PageSize;
        _file = Fit(_file, batch.Length + 2 * page, page);
        int at = image.ReadBatchThrough(h.Handle, h.Align, batch, _file.GetSpan());
        var headers = image.CheckBatch(batch, _file.GetSpan().Slice(at, batch.Length));
        int pageBytes = 0;
        for (int i = batch.First; i < batch.First + batch.Count; i++)
            pageBytes += image.Index[i].Length;
        _where.Clear();
        int used = 0;
        int first = number - record;
        for (int i = batch.First; i < batch.First + batch.Count; i++)
        {
            int length = image.Index[i].Length;
            if (headers[i - batch.First].IsPlain)
            {
                _where[first + i] = _file.Pointer + at + image.PayloadOffset(batch, i);
                continue;
            }
            _pages = Fit(_pages, pageBytes, page);
            if (_decoderOf != image)
            {
                _decoder?.Dispose();
                (_decoder, _decoderOf) = (image.CreateDecoder(), image);
            }
            image.Decode(batch, _file.GetSpan().Slice(at, batch.Length), headers, i, _decoder!, _pages.GetSpan().Slice(used, length));
            _where[first + i] = _pages.Pointer + used;
            used += length;
        }
    }

    /// <summary>Where the pages of record <paramref name="number"/> of the last batch loaded are.</summary>
    public nint Pages(int number) => _where[number];

    public bool Holds(int number) => _where.ContainsKey(number);

    private static AlignedBuffer Fit(AlignedBuffer? buffer, int bytes, int page)
    {
        if (buffer is not null && buffer.Length >= bytes)
            return buffer;
        (buffer as IDisposable)?.Dispose();
        return new AlignedBuffer(Math.Max(bytes, page), page);
    }

    public void Dispose()
    {
        foreach (var (handle, _) in _handles.Values)
            handle.Dispose();
        (_file as IDisposable)?.Dispose();
        (_pages as IDisposable)?.Dispose();
        _decoder?.Dispose();
    }
}
