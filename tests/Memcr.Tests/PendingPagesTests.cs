using Memcr.Engine.Lazy;

namespace Memcr.Tests;

public sealed class PendingPagesTests
{
    private const ulong P = 4096;

    private static PendingPages TwoRecords() => new([new PendingExtent(10 * P, 14 * P, 0, 0), new PendingExtent(14 * P, 16 * P, 1, 0)]);

    [Fact]
    public void Find_GivesTheExtentHoldingAnAddress_AndNothingOutside()
    {
        var pages = TwoRecords();
        Assert.Equal(0, pages.Find(13 * P + 5)!.Value.Record);
        Assert.Equal(1, pages.Find(14 * P)!.Value.Record);
        Assert.Null(pages.Find(16 * P));
        Assert.Null(pages.Find(9 * P));
    }

    [Fact]
    public void Remove_CutsAcrossExtents_KeepingTheOffsetsOfWhatIsLeft()
    {
        var pages = TwoRecords();
        pages.Remove(12 * P, 15 * P);
        Assert.Equal(3 * P, pages.Bytes);
        Assert.Equal(new PendingExtent(10 * P, 12 * P, 0, 0), pages.Find(11 * P));
        Assert.Null(pages.Find(13 * P));
        Assert.Equal(new PendingExtent(15 * P, 16 * P, 1, (int)P), pages.Find(15 * P));
    }

    [Fact]
    public void Move_OwesTheMovedPagesWhereTheyWent_AndDropsWhatWasThere()
    {
        var pages = TwoRecords();
        pages.Remove(14 * P, 16 * P);
        pages.Add(new PendingExtent(100 * P, 102 * P, 7, 0));
        pages.Move(11 * P, 100 * P, 2 * P); // mremap of [11, 13) onto [100, 102)
        Assert.Equal(new PendingExtent(100 * P, 102 * P, 0, (int)P), pages.Find(101 * P));
        Assert.Null(pages.Find(11 * P));
        Assert.Equal(new PendingExtent(13 * P, 14 * P, 0, 3 * (int)P), pages.Find(13 * P));
        Assert.Equal(4 * P, pages.Bytes);
        Assert.Empty(pages.OfRecord(7));
    }

    [Fact]
    public void Clone_IsIndependent()
    {
        var pages = TwoRecords();
        var child = pages.Clone();
        pages.Remove(10 * P, 16 * P);
        Assert.True(pages.IsEmpty);
        Assert.Equal(6 * P, child.Bytes);
    }
}
