using Memcr.IntegrationTests.Harness;

namespace Memcr.IntegrationTests;

/// <summary>
/// memcr restore of a dump CRIU 4.2 made (tests/fixtures/criu-images/tree): in a pid namespace of
/// its own, where the dumped pids are free, with the files the images name recreated as they were
/// at the dump under a private /tmp/criu-fixture.
/// </summary>
public sealed class CriuFixtureRestoreTests
{
    private const int Parent = 21930, Child = 21932;

    private static bool CpuHas(string flag) =>
        File.ReadLines("/proc/cpuinfo").Any(l => l.StartsWith("flags", StringComparison.Ordinal) && l.Split(' ').Contains(flag));

    [Fact]
    public void CriusTreeDump_RestoresAndCarriesOn()
    {
        string fixture = Path.Combine(Repo.Root, "tests", "fixtures", "criu-images");
        string dir = Repo.NewScratchDir("criu-fixture-tree");
        string files = Directory.CreateDirectory(Path.Combine(dir, "files")).FullName;
        string images = Directory.CreateDirectory(Path.Combine(dir, "images")).FullName;
        foreach (var f in Directory.GetFiles(Path.Combine(fixture, "tree", "images")))
            File.Copy(f, Path.Combine(images, Path.GetFileName(f)));
        // The files as they were at the dump: the very binary, its output so far, its data file, its log.
        File.Copy(Path.Combine(fixture, "programs", "tree"), Path.Combine(files, "tree"));
        File.SetUnixFileMode(Path.Combine(files, "tree"), (UnixFileMode)0x1ed);
        File.WriteAllText(Path.Combine(files, "tree.stdout"), $"READY {Parent} child {Child}\n");
        File.WriteAllText(Path.Combine(files, "tree.data"), string.Concat(Enumerable.Range(0, 100).Select(i => $"line {i:000}\n")));
        File.Copy(Path.Combine(fixture, "tree", "tree.log.at-dump"), Path.Combine(files, "tree.log"));
        string before = CriuRun.Fingerprint(images);

        // sh is the namespace's init: it restores, looks at the tree for a while, and its exit ends the namespace.
        string script = $"""
            set -e
            mkdir -p /tmp/criu-fixture
            mount --bind {files} /tmp/criu-fixture
            {Repo.Memcr} restore -D {images} -d -v3
            sleep 2.5
            echo "threads $(ls /proc/{Parent}/task | tr '\n' ' ')"
            grep -E '^(PPid|SigPnd|SigBlk):' /proc/{Child}/status /proc/{Parent}/status
            grep pos: /proc/{Parent}/fdinfo/6
            """;
        var (code, output) = Repo.Run("unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", script);
        if (!CpuHas("avx512f"))
        {
            // The fixture was dumped on a CPU with AVX-512, and its libc chose string functions
            // that use it: on a CPU without, the tree would die of an invalid opcode once let go.
            Assert.True(code != 0, output);
            Assert.Contains("pid 21930 cannot run on this machine: the CPU it was dumped on had AVX-512, which this CPU lacks", output);
            Assert.Contains("nothing was restored", output);
            Assert.Equal(before, CriuRun.Fingerprint(images));
            Directory.Delete(dir, recursive: true);
            return;
        }
        Assert.True(code == 0, output);
        Assert.Contains($"threads {Parent} {Parent + 3} {Parent + 4} {Parent + 5} ", output);
        Assert.Contains($"/proc/{Child}/status:PPid:\t{Parent}", output);
        Assert.Contains("pos:\t90", output);
        // SIGUSR2 (bit 11) blocked and pending in the parent, as at the dump.
        var sigpnd = output.Split('\n').First(l => l.StartsWith($"/proc/{Parent}/status:SigPnd:", StringComparison.Ordinal));
        Assert.NotEqual(0UL, Convert.ToUInt64(sigpnd.Split('\t')[1], 16) & (1UL << 11));

        var log = File.ReadAllLines(Path.Combine(files, "tree.log"));
        Assert.Contains($"parent {Parent} tick 4 usr1=1 ", string.Join('\n', log));
        Assert.Contains(log, l => l.StartsWith($"parent {Parent} tick 5 usr1=1 ", StringComparison.Ordinal) && l.EndsWith("pos=90", StringComparison.Ordinal));
        Assert.Contains(log.Skip(File.ReadAllLines(Path.Combine(fixture, "tree", "tree.log.at-dump")).Length), l => l.StartsWith($"child {Child} tick", StringComparison.Ordinal));
        Assert.Equal(before, CriuRun.Fingerprint(images));
        Directory.Delete(dir, recursive: true);
    }
}
