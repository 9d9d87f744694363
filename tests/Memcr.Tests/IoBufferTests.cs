using System.Globalization;
using Memcr.Linux.Memory;

namespace Memcr.Tests;

public sealed class IoBufferTests
{
    private const int Slot = (1 << 20) + (72 << 10); // a lazy fill's read: a 1 MiB record, its padding page, a block either side

    [Fact]
    public void BufferPool_GivesDistinctWritableSlots_ReusesReturnedOnes_AndWaitsWhenAllAreTaken()
    {
        using var pool = new BufferPool(3, Slot);
        var taken = Enumerable.Range(0, 3).Select(_ => pool.Take(CancellationToken.None)).ToList();
        for (int i = 0; i < taken.Count; i++)
        {
            Assert.Equal(Slot, taken[i].Length);
            Assert.Equal(0, taken[i].Pointer % Environment.SystemPageSize);
            taken[i].GetSpan().Fill((byte)(i + 1));
        }
        // Each slot holds what was written to it: none overlaps another.
        for (int i = 0; i < taken.Count; i++)
            Assert.True(taken[i].GetSpan().IndexOfAnyExcept((byte)(i + 1)) < 0, $"slot {i} was overwritten");

        using var wait = new CancellationTokenSource(200);
        Assert.ThrowsAny<OperationCanceledException>(() => pool.Take(wait.Token));

        pool.Return(taken[1]);
        Assert.Same(taken[1], pool.Take(CancellationToken.None));
    }

    [Fact]
    public void PoolSlotsAndLargeBuffers_AreMadeOfHugePages_WhereTransparentHugePagesAreOn()
    {
        using var pool = new BufferPool(3, Slot);
        var first = pool.Take(CancellationToken.None);
        pool.Take(CancellationToken.None);
        pool.Take(CancellationToken.None);
        using var large = new AlignedBuffer((4 << 20) + (72 << 10));
        if (!IoMemory.HugePages)
            return; // transparent huge pages are off: the buffers are small pages, as they were before
        // The pool's 3.2 MiB hold one whole huge page (its mapping starts on a huge-page boundary), the 4 MiB buffer two.
        Assert.True(AnonHugeKb(first.Pointer) >= 2048, $"pool: {AnonHugeKb(first.Pointer)} kB of huge pages");
        Assert.True(AnonHugeKb(large.Pointer) >= 4096, $"buffer: {AnonHugeKb(large.Pointer)} kB of huge pages");
    }

    /// <summary>AnonHugePages of the mapping of this process that holds <paramref name="address"/>, from /proc/self/smaps.</summary>
    private static long AnonHugeKb(nint address)
    {
        bool inside = false;
        foreach (var line in File.ReadLines("/proc/self/smaps"))
        {
            int dash = line.IndexOf('-', StringComparison.Ordinal);
            int space = line.IndexOf(' ', StringComparison.Ordinal);
            if (dash > 0 && space > dash && ulong.TryParse(line.AsSpan(0, dash), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out ulong start)
                && ulong.TryParse(line.AsSpan(dash + 1, space - dash - 1), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out ulong end))
            {
                inside = (ulong)address >= start && (ulong)address < end;
            }
            else if (inside && line.StartsWith("AnonHugePages:", StringComparison.Ordinal))
            {
                return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture);
            }
        }
        throw new InvalidOperationException($"0x{address:x} is not mapped");
    }
}
