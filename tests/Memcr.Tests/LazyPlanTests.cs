using Memcr.Image;
using Memcr.Engine.Lazy;
using Memcr.Linux.Proc;

namespace Memcr.Tests;

public sealed class LazyPlanTests
{
    private static Vma Anon(ulong start, ulong end, Protection protection = Protection.Read | Protection.Write) => new(start, end, protection, false, 0, 0, "");

    [Fact]
    public void ServesRecordsUnderPrivateWritableAnonymousMemoryOnly_AndRegistersTheVmasUnderThem()
    {
        var vmas = new List<Vma>
        {
            Anon(0x1000, 0x3000),
            new(0x3000, 0x4000, Protection.Read | Protection.Write, false, 0, 7, "/lib/data"),
            Anon(0x4000, 0x6000),
            Anon(0x6000, 0x8000, Protection.Read | Protection.Write | Protection.Exec),
            Anon(0x9000, 0xa000, Protection.Read),
            new(0xa000, 0xb000, Protection.Read | Protection.Write, true, 0, 0, ""),
        };
        KeptRange[][] records =
        [
            [new(0x1000, 0x2000)],
            [new(0x2000, 0x3000), new(0x3000, 0x3800)], // reaches into the file mapping
            [new(0x5000, 0x7000)],                      // across two VMAs
            [new(0x9000, 0xa000)],                      // read-only
            [new(0xa000, 0xb000)],                      // shared
            [new(0xb000, 0xc000)],                      // nothing mapped there any more, just after the shared VMA
        ];
        var plan = new LazyPlan(vmas, records.Length, i => records[i]);
        Assert.Equal([true, false, true, false, false, true], plan.Lazy);
        Assert.Equal([(0x1000UL, 0x3000UL), (0x4000UL, 0x8000UL)], plan.Registered);
    }
}
