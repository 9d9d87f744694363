using System.Globalization;
using Memcr.Image;

namespace Memcr.Engine.Incremental;

/// <summary>
/// The images of one process, newest first: a full image, then incremental images, each holding
/// the pages written since the one before it and naming it (its image id). The newest is the
/// checkpoint's image (<c>pages-PID.img</c>); the older ones are <c>pages-PID.ID.img</c>.
/// <see cref="Open"/> proves all that can be proven without reading pages, for every image of
/// the chain, before anything is written from any of them.
/// </summary>
internal sealed class ImageChain : IDisposable
{
    /// <summary>Longest chain: one more checkpoint after this many images writes a full image again.</summary>
    public const int MaxImages = 4;

    private ImageChain(List<ImageReader> images) => Images = images;

    /// <summary>Newest first; the last is a full image.</summary>
    public List<ImageReader> Images { get; }

    public ImageReader Newest => Images[0];

    public long FileBytes => Images.Sum(i => i.Length);

    /// <summary>Where an older image of <paramref name="pid"/>'s chain lives, by its image id.</summary>
    public static string OlderPath(string dumpDir, int pid, ulong imageId) =>
        Path.Combine(dumpDir, string.Create(CultureInfo.InvariantCulture, $"pages-{pid}.{imageId:x16}.img"));

    /// <summary>Opens the chain that ends with the image at <paramref name="path"/> (id <paramref name="imageId"/>).</summary>
    public static ImageChain Open(string path, ulong imageId, int pid, byte[]? key)
    {
        var images = new List<ImageReader>();
        try
        {
            images.Add(CheckpointSession.OpenImage(path, imageId, pid, key));
            string dir = Path.GetDirectoryName(path) ?? ".";
            while (images[^1].Header.Incremental)
            {
                var child = images[^1];
                string older = OlderPath(dir, pid, child.Header.ParentId);
                if (!File.Exists(older))
                    throw new ImageFormatException(child.Path, 80, $"the image it was taken over, {older}, is missing");
                var parent = CheckpointSession.OpenImage(older, child.Header.ParentId, pid, key);
                images.Add(parent);
                if (parent.Header.ChainDepth != child.Header.ChainDepth - 1)
                    throw new ImageFormatException(older, 88, $"chain depth {parent.Header.ChainDepth} where {child.Header.ChainDepth - 1} belongs (an image of another chain)");
                if (parent.Header.Encryption != child.Header.Encryption)
                    throw new ImageFormatException(older, 23, "encrypted differently from the image taken over it");
            }
            return new ImageChain(images);
        }
        catch
        {
            images.ForEach(i => i.Dispose());
            throw;
        }
    }

    /// <summary>
    /// The pages to take from each image (same order as <see cref="Images"/>): null for the newest
    /// (all of its own), and for each older one what every newer one kept from it.
    /// </summary>
    public List<IReadOnlyList<KeptRange>?> Wanted()
    {
        var wanted = new List<IReadOnlyList<KeptRange>?> { null };
        IReadOnlyList<KeptRange> kept = Newest.Kept;
        for (int i = 1; i < Images.Count; i++)
        {
            wanted.Add(PageRanges.Intersect(PageRanges.Held(Images[i]), kept));
            if (Images[i].Header.Incremental)
                kept = PageRanges.Intersect(kept, Images[i].Kept);
        }
        return wanted;
    }

    /// <summary>Every page a restore from this chain writes.</summary>
    public List<KeptRange> Pages()
    {
        var pages = PageRanges.Held(Images[^1]);
        for (int i = Images.Count - 2; i >= 0; i--)
            pages = PageRanges.Union(PageRanges.Held(Images[i]), PageRanges.Intersect(pages, Images[i].Kept));
        return pages;
    }

    /// <summary>Removes every image of <paramref name="pid"/> in <paramref name="dumpDir"/> but the newest.</summary>
    public static void DeleteOlder(string dumpDir, int pid, Action<string> error)
    {
        List<string> older;
        try
        {
            older = Directory.EnumerateFiles(dumpDir, $"pages-{pid}.*.img").ToList();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            error($"cannot list {dumpDir}: {e.Message}");
            return;
        }
        foreach (var file in older)
        {
            try
            {
                File.Delete(file);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                error($"cannot remove {file}: {e.Message}");
            }
        }
    }

    public void Dispose() => Images.ForEach(i => i.Dispose());
}
