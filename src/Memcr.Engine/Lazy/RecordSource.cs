using Memcr.Image;
using Memcr.Linux.Memory;
using Microsoft.Win32.SafeHandles;

namespace Memcr.Engine.Lazy;

/// <summary>
/// Reads image records one batch at a time and gives their pages, checked and decoded: for the
/// records a lazy restore's faults need at once, by their numbers in <see cref="LazyImages"/>. Each record is checked (header, index entry,
/// payload checksum; then GCM tag and content checksum as it is decoded) before any of its pages
/// is handed out. It reads with O_DIRECT (unless the image is to stay cached) through a handle of
/// its own for each image: it serves faults, so its reads also go ahead of the fill's (see LazyRestore).
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

    /// <summary>Reads the batch that holds record <paramref name="number"/> and decodes its records; <see cref="Pages"/> then points at each one's pages.</summary>
    public void Load(int number)
    {
        var (image, record) = _images.At(number);
        if (!_handles.TryGetValue(image, out var h))
        {
            var handle = image.Reopen(direct: !_keepCache, out bool direct);
            _handles[image] = h = (handle, direct ? image.Header.PageSize : 1);
        }
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
