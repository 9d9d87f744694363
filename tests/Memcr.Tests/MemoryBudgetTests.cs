using Memcr.Cli;
using Memcr.Engine;
using Memcr.Image;
using Memcr.Linux.Memory;

namespace Memcr.Tests;

public sealed class MemoryBudgetTests
{
    private const long MiB = 1 << 20;
    private const int Page = 4096;

    [Fact]
    public void AGrant_IsAsMuchAsIsFree_BetweenLeastAndWanted_AndComesBackWhenDisposed()
    {
        var budget = new MemoryBudget(16 * MiB);
        using (var a = budget.Acquire(2 * MiB, 10 * MiB))
        {
            Assert.Equal(10 * MiB, a.Bytes);
            using var b = budget.Acquire(2 * MiB, 10 * MiB);
            Assert.Equal(6 * MiB, b.Bytes);
            Assert.Equal(16 * MiB, budget.InUse);
        }
        Assert.Equal(0, budget.InUse);
        using var all = budget.Acquire(1, long.MaxValue);
        Assert.Equal(16 * MiB, all.Bytes);
    }

    [Fact]
    public void OperationsThatCannotGetTheirLeast_WaitInTheOrderTheyAsked()
    {
        var budget = new MemoryBudget(8 * MiB);
        var first = budget.Acquire(8 * MiB, 8 * MiB);
        var order = new System.Collections.Concurrent.ConcurrentQueue<int>();
        var waiters = new List<Thread>();
        for (int i = 0; i < 3; i++)
        {
            int n = i;
            var t = new Thread(() =>
            {
                using var g = budget.Acquire(6 * MiB, 6 * MiB);
                order.Enqueue(n);
                Thread.Sleep(20);
            });
            t.Start();
            waiters.Add(t);
            // Each asks after the one before it is waiting.
            SpinWait.SpinUntil(() => t.ThreadState.HasFlag(ThreadState.WaitSleepJoin), 5000);
        }
        Assert.Empty(order);
        first.Dispose();
        foreach (var t in waiters)
            Assert.True(t.Join(10000));
        Assert.Equal([0, 1, 2], order);
        Assert.Equal(0, budget.InUse);
    }

    [Fact]
    public void AWaiterThatIsCancelled_GivesUp_WithoutHoldingUpThoseBehindIt()
    {
        var budget = new MemoryBudget(8 * MiB);
        var held = budget.Acquire(8 * MiB, 8 * MiB);
        using var cancel = new CancellationTokenSource();
        Exception? cancelled = null;
        var giveUp = new Thread(() =>
        {
            try
            {
                budget.Acquire(8 * MiB, 8 * MiB, cancel.Token).Dispose();
            }
            catch (OperationCanceledException e)
            {
                cancelled = e;
            }
        });
        giveUp.Start();
        SpinWait.SpinUntil(() => giveUp.ThreadState.HasFlag(ThreadState.WaitSleepJoin), 5000);
        MemoryGrant? later = null;
        var behind = new Thread(() => later = budget.Acquire(MiB, MiB));
        behind.Start();
        SpinWait.SpinUntil(() => behind.ThreadState.HasFlag(ThreadState.WaitSleepJoin), 5000);
        cancel.Cancel();
        Assert.True(giveUp.Join(10000));
        Assert.IsType<OperationCanceledException>(cancelled, exactMatch: false);
        held.Dispose();
        Assert.True(behind.Join(10000));
        Assert.Equal(MiB, later!.Bytes);
        later.Dispose();
        Assert.Equal(0, budget.InUse);
    }

    [Fact]
    public void ABudgetBelowTheMinimum_IsRefused()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new MemoryBudget(MemoryBudget.MinimumBytes - 1));
    }

    [Theory]
    [InlineData("16M", 16 * MiB)]
    [InlineData("8m", 8 * MiB)]
    [InlineData("1G", 1024 * MiB)]
    [InlineData("20480K", 20 * MiB)]
    [InlineData("33554432", 32 * MiB)]
    [InlineData("64MB", 64 * MiB)]
    public void BufferBudgetOption_TakesSizesWithSuffixes(string text, long bytes)
    {
        Assert.Equal(bytes, MemcrArguments.Parse(["--buffer-budget", text]).BufferBudget);
    }

    [Theory]
    [InlineData("4M", "too small")]
    [InlineData("lots", "invalid buffer budget")]
    [InlineData("-16M", "invalid buffer budget")]
    [InlineData("99999999999G", "invalid buffer budget")]
    public void BufferBudgetOption_RefusesWhatIsNotASizeOrTooSmall(string text, string message)
    {
        var e = Assert.Throws<GetOptException>(() => MemcrArguments.Parse(["--buffer-budget", text]));
        Assert.Contains(message, e.Message);
    }

    public static TheoryData<long, bool> Grants => new()
    {
        { 8 * MiB, false }, { 16 * MiB, false }, { 24 * MiB, false }, { 64 * MiB, false },
        { 6 * MiB, true }, { 8 * MiB, true }, { 16 * MiB, true }, { 48 * MiB, true },
    };

    [Theory]
    [MemberData(nameof(Grants))]
    public void CheckpointBuffers_FitTheGrant_AndHoldAWholeRecordEach(long bytes, bool packed)
    {
        var budget = new MemoryBudget(Math.Max(bytes, MemoryBudget.MinimumBytes));
        using var grant = budget.Acquire(bytes, bytes);
        var b = CheckpointBuffers.For(grant, packed, encoders: 2, Page);
        long used = (long)b.Reads * b.ReadBytes + (long)b.Outputs * CheckpointBuffers.OutputBytes(b.ReadBytes, Page) + b.StagingBytes;
        Assert.True(used <= bytes, $"{b} takes {used} bytes of {bytes}");
        Assert.True(b.ReadBytes >= CheckpointBuffers.RecordBytes);
        Assert.True(b.Reads >= 2);
        if (packed)
            Assert.True(b.Outputs >= 2 && b.Encoders >= 1 && b.StagingBytes % Page == 0);
    }

    public static TheoryData<bool, int> RestoreCases => new()
    {
        { false, 0 }, { true, 0 }, { false, 1 << 20 }, { true, 1 << 20 },
    };

    [Theory]
    [MemberData(nameof(RestoreCases))]
    public void RestoreBuffers_FitTheGrant_FromTheLeastToWhatIsWanted(bool packed, int checkBytes)
    {
        const int Workers = 2;
        var (least, wanted) = RestoreBuffers.Ask(Workers, packed, checkBytes, Page);
        Assert.True(least <= MemoryBudget.MinimumBytes, $"a restore needs {least} bytes, more than the smallest budget");
        for (long bytes = least; bytes <= wanted; bytes += MiB / 2)
        {
            var budget = new MemoryBudget(Math.Max(bytes, MemoryBudget.MinimumBytes));
            using var grant = budget.Acquire(bytes, bytes);
            var b = RestoreBuffers.For(grant, Workers, packed, checkBytes, Page);
            long used = (long)b.Reads * (b.ReadBytes + 2 * Page) + (packed ? Workers * (long)b.PageBytes : 0) + Workers * (long)b.CheckBytes;
            Assert.True(used <= bytes, $"{b} takes {used} bytes of {bytes}");
            // Every read buffer holds a whole plain record with its padding page and header.
            Assert.True(b.ReadBytes >= CheckpointBuffers.RecordBytes + Page, $"{b}: reads too small for a record");
            Assert.True(b.Reads >= (packed ? Workers + 1 : 3));
        }
        Assert.True(CheckpointBuffers.Ask(true, 2, Page).Least <= MemoryBudget.MinimumBytes);
        Assert.Equal(BatchStream.ReadBytes, RestoreBuffers.For(new MemoryBudget(wanted).Acquire(wanted, wanted), Workers, packed, checkBytes, Page).ReadBytes);
    }
}
