using Memcr.Engine;

namespace Memcr.Tests;

public sealed class MemoryDropTests
{
    private const ulong MiB = 1 << 20;

    private static ulong Bytes(IEnumerable<(ulong Start, ulong End)> spans) => spans.Aggregate(0UL, (sum, s) => sum + (s.End - s.Start));

    /// <summary>The shares put together again, adjacent pieces merged: what was to be dropped.</summary>
    private static List<(ulong Start, ulong End)> Merged(IEnumerable<(ulong Start, ulong End)> pieces)
    {
        var merged = new List<(ulong Start, ulong End)>();
        foreach (var p in pieces.OrderBy(p => p.Start))
        {
            Assert.True(p.End > p.Start);
            Assert.True(merged.Count == 0 || merged[^1].End <= p.Start, "shares overlap");
            if (merged.Count > 0 && merged[^1].End == p.Start)
                merged[^1] = (merged[^1].Start, p.End);
            else
                merged.Add(p);
        }
        return merged;
    }

    [Fact]
    public void Share_GivesEachHelperOneLargeRange_AndTheLeaderTheRest()
    {
        // A 1 GiB heap, a few small spans and a 200 MiB one, as a program's drop spans look.
        var spans = new List<(ulong Start, ulong End)>
        {
            (0x1000_0000, 0x1000_0000 + 1024 * MiB),
            (0x7000_0000, 0x7000_1000),
            (0x7000_5000, 0x7000_9000),
            (0x8000_0000, 0x8000_0000 + 200 * MiB),
        };
        var (leader, helpers) = MemoryDrop.Share(spans, 2);

        var helper = Assert.Single(helpers);
        Assert.Equal(Merged(spans), Merged(leader.Append(helper)));
        Assert.Equal(leader.OrderBy(s => s.Start), leader);
        // Half of the bytes, in whole 64 MiB, from the top of the largest span.
        Assert.Equal((0x1000_0000 + 1024 * MiB - 576 * MiB, 0x1000_0000 + 1024 * MiB), helper);
        Assert.Equal(4, leader.Count);

        var (leader4, helpers4) = MemoryDrop.Share(spans, 4);
        Assert.Equal(3, helpers4.Count);
        Assert.Equal(Merged(spans), Merged(leader4.Concat(helpers4)));
        Assert.All(helpers4, h => Assert.Equal(256 * MiB, h.End - h.Start));
        Assert.Equal(1224 * MiB - 768 * MiB + 0x5000, Bytes(leader4));
    }

    [Fact]
    public void Share_KeepsSmallDropsAndSingleThreadsWhole()
    {
        var small = new List<(ulong Start, ulong End)> { (0x1000, 0x1000 + 100 * MiB), (0x9000_0000, 0x9000_2000) };
        var (leader, helpers) = MemoryDrop.Share(small, 4);
        Assert.Equal(small, leader);
        Assert.Empty(helpers);
        var big = new List<(ulong Start, ulong End)> { (0x1000, 0x1000 + 4096 * MiB) };
        (leader, helpers) = MemoryDrop.Share(big, 1);
        Assert.Equal(big, leader);
        Assert.Empty(helpers);
        // No more helpers than four threads allow, and none for spans under 64 MiB.
        Assert.Equal(3, MemoryDrop.Share(big, 16).Helpers.Count);
        var scattered = Enumerable.Range(0, 100).Select(i => ((ulong)i << 32, ((ulong)i << 32) + 32 * MiB)).ToList();
        (leader, helpers) = MemoryDrop.Share(scattered, 2);
        Assert.Empty(helpers);
        Assert.Equal(scattered, leader);
    }
}
