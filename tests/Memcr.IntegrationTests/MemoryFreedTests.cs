using System.Globalization;
using Memcr.IntegrationTests.Harness;
using Memcr.Linux;

namespace Memcr.IntegrationTests;

public sealed class MemoryFreedTests
{
    private static long MeminfoKb(string key)
    {
        foreach (var line in File.ReadLines("/proc/meminfo"))
        {
            if (line.StartsWith(key + ":", StringComparison.Ordinal))
                return long.Parse(line[(key.Length + 1)..].Trim().Split(' ')[0], CultureInfo.InvariantCulture);
        }
        throw new InvalidOperationException($"{key} not in /proc/meminfo");
    }

    [Fact]
    public void WrittenImage_IsNeitherDirtyNorCached_WhileCheckpointed()
    {
        using var target = FifoTarget.StartMemtest(heapMb: 256);
        string dir = Repo.NewScratchDir("freed");
        string image = Path.Combine(dir, $"pages-{target.Pid}.img");
        long dirtyBefore = MeminfoKb("Dirty");
        using var memcr = MemcrProcess.Start("-p", target.Pid.ToString(), "-d", dir);
        memcr.WaitForPrompt();

        long imagePages = (new FileInfo(image).Length + Environment.SystemPageSize - 1) / Environment.SystemPageSize;
        long resident = FileOps.ResidentPages(image);
        long dirtyGrowthKb = MeminfoKb("Dirty") - dirtyBefore;
        long imageKb = imagePages * Environment.SystemPageSize / 1024;
        Assert.True(imageKb > 256 * 1024);
        Assert.True(resident <= imagePages / 10, $"{resident} of {imagePages} image pages in the page cache");
        Assert.True(dirtyGrowthKb < imageKb / 10, $"Dirty grew by {dirtyGrowthKb} kB for a {imageKb} kB image");

        memcr.PressEnter();
        Assert.True(memcr.WaitForExit() == 0, memcr.Output);
        target.AssertIntact();
        Directory.Delete(dir, recursive: true);
    }
}
