using Memcr.Engine.Incremental;
using Memcr.Image;

namespace Memcr.Engine.Lazy;

/// <summary>
/// The images a lazy restore serves pages from: one image, or the chain of an incremental one
/// (newest first), each giving what the newer ones kept from it. Their records are numbered one
/// after the other, image after image, so that what is owed names a record by one number (see
/// <see cref="PendingExtent.Record"/>); <see cref="Parts"/> says which pages of each record are
/// wanted (all of them but in the older images of a chain).
/// </summary>
internal sealed class LazyImages : IDisposable
{
    private readonly ImageChain _chain;
    private readonly int[] _first;
    private readonly KeptRange[][] _parts;

    public LazyImages(ImageChain chain)
    {
        _chain = chain;
        _first = new int[chain.Images.Count + 1];
        for (int k = 0; k < chain.Images.Count; k++)
            _first[k + 1] = _first[k] + chain.Images[k].Index.Count;
        _parts = new KeptRange[_first[^1]][];
        var wanted = chain.Wanted();
        for (int k = 0; k < chain.Images.Count; k++)
        {
            var image = chain.Images[k];
            for (int i = 0; i < image.Index.Count; i++)
            {
                var e = image.Index[i];
                _parts[_first[k] + i] = wanted[k] is { } w ? PageRanges.Within(w, e.Address, e.End).ToArray() : [new KeptRange(e.Address, e.End)];
            }
        }
    }

    /// <summary>Newest first.</summary>
    public IReadOnlyList<ImageReader> Images => _chain.Images;

    public ImageReader Newest => _chain.Newest;

    public int PageSize => Newest.Header.PageSize;

    /// <summary>Records of all the images.</summary>
    public int Count => _first[^1];

    /// <summary>The number of record <paramref name="record"/> of image <paramref name="image"/> (an index into <see cref="Images"/>).</summary>
    public int Number(int image, int record) => _first[image] + record;

    /// <summary>The image and record of record number <paramref name="number"/>.</summary>
    public (ImageReader Image, int Record) At(int number)
    {
        int k = Array.BinarySearch(_first, number);
        // Images without records share a first number with the next one: take the last of them.
        if (k >= 0)
        {
            while (k + 1 < _first.Length - 1 && _first[k + 1] == number)
                k++;
        }
        else
            k = ~k - 1;
        return (_chain.Images[k], number - _first[k]);
    }

    /// <summary>The pages of record <paramref name="number"/> that the restore writes, in address order.</summary>
    public KeptRange[] Parts(int number) => _parts[number];

    /// <summary>
    /// The wanted pages of the records <paramref name="which"/> says (indexed by record number;
    /// null: all), owed where they were saved, record after record.
    /// </summary>
    public List<PendingExtent> Owed(bool[]? which)
    {
        var owed = new List<PendingExtent>(Count);
        for (int k = 0; k < _chain.Images.Count; k++)
        {
            var index = _chain.Images[k].Index;
            for (int number = _first[k]; number < _first[k + 1]; number++)
            {
                if (which is not null && !which[number])
                    continue;
                ulong address = index[number - _first[k]].Address;
                foreach (var p in _parts[number])
                    owed.Add(new PendingExtent(p.Start, p.End, number, (int)(p.Start - address)));
            }
        }
        return owed;
    }

    public void Dispose() => _chain.Dispose();
}
