using Memcr.Image;
using Memcr.Linux.Memory;
using Microsoft.Win32.SafeHandles;

namespace Memcr.Engine.Lazy;

/// <summary>
/// Reads image records one batch at a time and gives their pages, checked and decoded: for the
/// records a lazy restore's faults need at once. Each record is checked (header, index entry,
/// payload checksum; then GCM tag and content checksum as it is decoded) before any of its pages
/// is handed out. It reads with O_DIRECT (unless the image is to stay cached) through a handle of
/// its own: it serves faults, so its reads also go ahead of the fill's (see LazyRestore).
/// </summary>
internal sealed class RecordSource : IDisposable
{
    private readonly ImageReader _image;
    private readonly SafeFileHandle _handle;
    private readonly int _align;
    private AlignedBuffer? _file;
    private AlignedBuffer? _pages;
    private RecordDecoder? _decoder;
    private readonly Dictionary<int, nint> _where = [];

    public RecordSource(ImageReader image, bool keepCache)
    {
        _image = image;
        _handle = image.Reopen(direct: !keepCache, out bool direct);
        _align = direct ? image.Header.PageSize : 1;
    }

    /// <summary>Reads <paramref name="batch"/> and decodes its records; <see cref="Pages"/> then points at each one's pages.</summary>
    public void Load(in PageBatch batch)
    {
        int page = _image.Header.PageSize;
        _file = Fit(_file, batch.Length + 2 * page, page);
        int at = _image.ReadBatchThrough(_handle, _align, batch, _file.GetSpan());
        var headers = _image.CheckBatch(batch, _file.GetSpan().Slice(at, batch.Length));
        int pageBytes = 0;
        for (int i = batch.First; i < batch.First + batch.Count; i++)
            pageBytes += _image.Index[i].Length;
        _where.Clear();
        int used = 0;
        for (int i = batch.First; i < batch.First + batch.Count; i++)
        {
            int length = _image.Index[i].Length;
            if (headers[i - batch.First].IsPlain)
            {
                _where[i] = _file.Pointer + at + _image.PayloadOffset(batch, i);
                continue;
            }
            _pages = Fit(_pages, pageBytes, page);
            _decoder ??= _image.CreateDecoder();
            _image.Decode(batch, _file.GetSpan().Slice(at, batch.Length), headers, i, _decoder, _pages.GetSpan().Slice(used, length));
            _where[i] = _pages.Pointer + used;
            used += length;
        }
    }

    /// <summary>Where the pages of record <paramref name="record"/> of the last batch loaded are.</summary>
    public nint Pages(int record) => _where[record];

    public bool Holds(int record) => _where.ContainsKey(record);

    private static AlignedBuffer Fit(AlignedBuffer? buffer, int bytes, int page)
    {
        if (buffer is not null && buffer.Length >= bytes)
            return buffer;
        (buffer as IDisposable)?.Dispose();
        return new AlignedBuffer(Math.Max(bytes, page), page);
    }

    public void Dispose()
    {
        _handle.Dispose();
        (_file as IDisposable)?.Dispose();
        (_pages as IDisposable)?.Dispose();
        _decoder?.Dispose();
    }
}
