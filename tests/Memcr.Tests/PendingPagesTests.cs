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
    public void ExtentsOutOfAddressOrder_AreFoundAndOwedByRecord()
    {
        // A chain of incremental images owes image after image, each in address order.
        var pages = new PendingPages([new PendingExtent(20 * P, 22 * P, 0, 0), new PendingExtent(10 * P, 12 * P, 1, 0), new PendingExtent(12 * P, 13 * P, 1, 3 * (int)P)]);
        Assert.Equal(0, pages.Find(21 * P)!.Value.Record);
        Assert.Equal(1, pages.Find(12 * P)!.Value.Record);
        Assert.Equal([new PendingExtent(10 * P, 12 * P, 1, 0), new PendingExtent(12 * P, 13 * P, 1, 3 * (int)P)], pages.OfRecord(1));
        pages.Remove(10 * P, 12 * P);
        Assert.Equal([new PendingExtent(12 * P, 13 * P, 1, 3 * (int)P)], pages.OfRecord(1));
        pages.Remove(12 * P, 13 * P);
        Assert.False(pages.Owes(1));
        Assert.True(pages.Owes(0));
        Assert.False(pages.Owes(5));
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

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void OwesAndOfRecord_AgreeWithEveryPage_AfterRandomRemovesAndMoves(int seed)
    {
        const int Pages = 256, RecordPages = 8;
        var random = new Random(seed);
        // The model: which record, at which offset, each page of the address space owes (null: nothing).
        var model = new (int Record, int Offset)?[Pages];
        var extents = new List<PendingExtent>();
        for (int record = 0; record < 24; record++)
        {
            int start = record * RecordPages + random.Next(3); // gaps, and a record in up to two extents
            int split = random.Next(1, RecordPages - 2);
            extents.Add(new PendingExtent((ulong)start * P, (ulong)(start + split) * P, record, 0));
            extents.Add(new PendingExtent((ulong)(start + split) * P, (ulong)(record * RecordPages + RecordPages) * P, record, split * (int)P));
            for (int page = start; page < record * RecordPages + RecordPages; page++)
                model[page] = (record, (page - start) * (int)P);
        }
        var pending = new PendingPages(extents);
        for (int step = 0; step < 200; step++)
        {
            int from = random.Next(Pages - 16), length = random.Next(1, 16);
            if (random.Next(2) == 0)
            {
                pending.Remove((ulong)from * P, (ulong)(from + length) * P);
                Array.Fill(model, null, from, length);
            }
            else
            {
                int to = random.Next(Pages - length);
                if (to < from + length && to + length > from)
                    continue; // mremap's ranges never overlap
                pending.Move((ulong)from * P, (ulong)to * P, (ulong)length * P);
                var moved = model[from..(from + length)];
                Array.Fill(model, null, from, length);
                moved.CopyTo(model, to);
            }
            for (int record = 0; record < 24; record++)
            {
                var owedPages = Enumerable.Range(0, Pages).Where(page => model[page]?.Record == record).ToList();
                Assert.Equal(owedPages.Count > 0, pending.Owes(record));
                var fromExtents = pending.OfRecord(record)
                    .SelectMany(e => Enumerable.Range((int)(e.Start / P), (int)(e.Length / P)).Select(page => (page, e.Offset + (page - (int)(e.Start / P)) * (int)P)))
                    .ToList();
                Assert.Equal(owedPages.Select(page => (page, model[page]!.Value.Offset)), fromExtents);
            }
        }
    }
}
