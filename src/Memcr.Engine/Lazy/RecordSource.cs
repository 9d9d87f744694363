using Memcr.Image;
using Memcr.Linux.Memory;

namespace Memcr.Engine.Lazy;

/// <summary>
/// Reads batches of image records and gives their pages, checked and decoded: one per thread of a
/// lazy restore. Each record is checked (header, index entry, payload checksum; then GCM tag and
/// content checksum as it is decoded) before any of its pages is handed out.
/// </summary>
internal sealed class RecordSource(ImageReader image) : IDisposable
{
    private AlignedBuffer? _file;
    private AlignedBuffer? _pages;
    private RecordDecoder? _decoder;
    private readonly Dictionary<int, nint> _where = [];

    /// <summary>Reads <paramref name="batch"/> and decodes its records; <see cref="Pages"/> then points at each one's pages.</summary>
    public void Load(in PageBatch batch)
    {
        int page = image.Header.PageSize;
        _file = Fit(_file, batch.Length, page);
        var headers = image.ReadBatch(batch, _file.Memory);
        int pageBytes = 0;
        for (int i = batch.First; i < batch.First + batch.Count; i++)
            pageBytes += image.Index[i].Length;
        _where.Clear();
        int used = 0;
        for (int i = batch.First; i < batch.First + batch.Count; i++)
        {
            int length = image.Index[i].Length;
            if (headers[i - batch.First].IsPlain)
            {
                _where[i] = _file.Pointer + image.PayloadOffset(batch, i);
                continue;
            }
            _pages = Fit(_pages, pageBytes, page);
            _decoder ??= image.CreateDecoder();
            image.Decode(batch, _file.GetSpan(), headers, i, _decoder, _pages.GetSpan().Slice(used, length));
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
        (_file as IDisposable)?.Dispose();
        (_pages as IDisposable)?.Dispose();
        _decoder?.Dispose();
    }
}
