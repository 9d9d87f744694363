using System.Text.Json;
using Memcr.IntegrationTests.Harness;

namespace Memcr.IntegrationTests;

/// <summary>Compression, checksums and encryption on real targets, and the image tool on real images.</summary>
public sealed class ImageFeatureTests
{
    public static TheoryData<string, string> EveryCombination()
    {
        var data = new TheoryData<string, string>();
        int n = 0;
        foreach (string z in new[] { "", "-z", "-z zstd" })
        {
            foreach (string c in new[] { "", "-c" })
            {
                foreach (string e in new[] { "", "-e" })
                    data.Add($"{z} {c} {e}".Trim(), n++ % 2 == 0 ? "program" : "random");
            }
        }
        data.Add("-zce", "program");
        data.Add("-f -z zstd -c -e aes-128-cbc", "program");
        return data;
    }

    [Theory]
    [MemberData(nameof(EveryCombination))]
    public void EveryCompressChecksumEncryptCombination_RoundTrips(string options, string fill)
    {
        using var target = FifoTarget.StartMemtest(heapMb: 24, fill);
        string dir = Repo.NewScratchDir("combo");
        string image = Path.Combine(dir, $"pages-{target.Pid}.img");
        string maps = target.Maps;
        string[] args = ["-p", target.Pid.ToString(), "-d", dir, .. options.Split(' ', StringSplitOptions.RemoveEmptyEntries)];
        using var memcr = MemcrProcess.Start(args);
        memcr.WaitForPrompt();
        Assert.True(target.Status.RssAnonKb < 2048, $"RssAnon while checkpointed: {target.Status.RssAnonKb} kB");
        Assert.All(target.ThreadStates, s => Assert.True(s is 't' or 'T'));

        // The image tool reads the live image; without the key an encrypted one is checked as far as it can be.
        var (code, verify) = Run("image", "verify", image);
        Assert.True(code == 0, verify);
        Assert.Contains("OK", verify);
        long size = new FileInfo(image).Length;
        if (options.Contains('z') && fill == "program")
            Assert.True(size < 24L << 20, $"compressed image of a 24 MiB program-like heap is {size} bytes");

        memcr.PressEnter();
        Assert.True(memcr.WaitForExit() == 0, memcr.Output);
        Assert.False(File.Exists(image));
        Assert.Equal(maps, target.Maps);
        target.AssertIntact();
        Directory.Delete(dir, recursive: true);
    }

    private static (int Code, string Output) Run(params string[] args) => MemcrProcess.Run(args);

    internal static string KeyFile(string dir, string hex)
    {
        string path = Path.Combine(dir, "key");
        File.WriteAllText(path, hex + "\n");
        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        return path;
    }

    [Fact]
    public void KeyFile_LetsTheImageToolDecrypt_AndAWrongKeyIsRefused()
    {
        using var target = FifoTarget.StartMemtest(heapMb: 8, "program");
        string dir = Repo.NewScratchDir("keyfile");
        string image = Path.Combine(dir, $"pages-{target.Pid}.img");
        string key = KeyFile(dir, new string('7', 64));
        using var memcr = MemcrProcess.Start("-p", target.Pid.ToString(), "-d", dir, "-z", "-c", "--key-file", key);
        memcr.WaitForPrompt();

        var (code, output) = Run("image", "verify", image, "--key-file", key);
        Assert.True(code == 0, output);
        Assert.Contains("decryption and authentication", output);
        Assert.Contains("whole-image digest", output);

        string wrong = Path.Combine(dir, "wrong");
        File.WriteAllText(wrong, new string('8', 64));
        (code, output) = Run("image", "verify", image, "--key-file", wrong);
        Assert.Equal(1, code);
        Assert.Contains("wrong key", output);

        (code, output) = Run("image", "decode", image, "--json", "--pages", "--key-file", key);
        Assert.True(code == 0, output);
        using (var json = JsonDocument.Parse(output))
        {
            var records = json.RootElement.GetProperty("records");
            Assert.True(records.GetArrayLength() > 10);
            Assert.Equal("aes-256-gcm", json.RootElement.GetProperty("encryption").GetString());
            long pages = records.EnumerateArray().Sum(r => r.GetProperty("pages").GetBytesFromBase64().LongLength);
            Assert.Equal(json.RootElement.GetProperty("page_bytes").GetInt64(), pages);
        }

        memcr.PressEnter();
        Assert.True(memcr.WaitForExit() == 0, memcr.Output);
        target.AssertIntact();
        Directory.Delete(dir, recursive: true);
    }

    [Theory]
    [InlineData("missing", "cannot read key file")]
    [InlineData("short", "holds 5 bytes")]
    [InlineData("128", "holds a 128-bit key; aes-256-gcm needs 256 bits")]
    public void BadKeyFile_IsRefused_BeforeTheTargetIsTouched(string kind, string message)
    {
        using var target = FifoTarget.StartMemtest(heapMb: 8);
        string dir = Repo.NewScratchDir("badkey");
        string key = kind switch
        {
            "missing" => Path.Combine(dir, "nope"),
            "short" => KeyFile(dir, "abcd"),
            _ => KeyFile(dir, new string('a', 32)),
        };
        var (code, output) = Run("-p", target.Pid.ToString(), "-n", "-d", dir, "-e", "--key-file", key);
        Assert.Equal(1, code);
        Assert.Contains(message, output);
        Assert.Equal(0, target.Status.TracerPid);
        target.AssertIntact();
        Directory.Delete(dir, recursive: true);
    }

    [Theory]
    [InlineData("-zce", "flip", "checksum mismatch")]
    [InlineData("-z zstd", "truncate", "truncated")]
    [InlineData("-e", "swap", "wrong key")]
    [InlineData("-c", "swap", "not the image this checkpoint wrote")]
    public void DamagedEncodedImage_IsRefused_AndTheTargetKilled(string options, string damage, string message)
    {
        using var target = FifoTarget.StartMemtest(heapMb: 16, "program");
        using var other = FifoTarget.StartMemtest(heapMb: 4, "program");
        string dir = Repo.NewScratchDir("damaged-encoded");
        string image = Path.Combine(dir, $"pages-{target.Pid}.img");
        string[] extra = options.Split(' ');
        using var memcr = MemcrProcess.Start(["-p", target.Pid.ToString(), "-d", dir, .. extra]);
        memcr.WaitForPrompt();
        if (damage == "swap")
        {
            // An image of another process, written by another memcr, put in its place.
            string otherDir = Repo.NewScratchDir("other");
            using (var second = MemcrProcess.Start(["-p", other.Pid.ToString(), "-d", otherDir, .. extra]))
            {
                second.WaitForPrompt();
                File.Copy(Path.Combine(otherDir, $"pages-{other.Pid}.img"), image, overwrite: true);
                second.PressEnter();
                Assert.True(second.WaitForExit() == 0, second.Output);
            }
            other.AssertIntact();
            Directory.Delete(otherDir, recursive: true);
        }
        else
        {
            ImageDamage.Apply(image, damage);
        }
        memcr.AssertRestoreRefusedAndTargetKilled(target, message);
        Directory.Delete(dir, recursive: true);
    }

    [Fact]
    public void DiskFull_WhileWritingACompressedImage_LeavesTheTargetRunningUntouched()
    {
        using var target = FifoTarget.StartMemtest(heapMb: 48); // random: does not compress
        string maps = target.Maps;
        using var mount = TmpfsMount.Create("size=8m");
        var (code, output) = Run("-p", target.Pid.ToString(), "-n", "-d", mount.Path, "-z");
        Assert.Equal(1, code);
        Assert.Contains("No space left on device", output);
        Assert.Contains("left running untouched", output);
        Assert.Empty(Directory.GetFileSystemEntries(mount.Path));
        Assert.Equal(0, target.Status.TracerPid);
        Assert.Equal(maps, target.Maps);
        target.AssertIntact();
    }

    [Fact]
    public void ImageTool_ShowsAndCountsRealImages()
    {
        using var target = FifoTarget.StartMemtest(heapMb: 16, "program");
        string dir = Repo.NewScratchDir("tool");
        string image = Path.Combine(dir, $"pages-{target.Pid}.img");
        using var memcr = MemcrProcess.Start("-p", target.Pid.ToString(), "-d", dir, "-z", "zstd", "-c");
        memcr.WaitForPrompt();
        File.WriteAllBytes(Path.Combine(dir, "junk.img"), new byte[100]);

        var (code, show) = Run("image", "show", image);
        Assert.True(code == 0, show);
        Assert.Contains($"pid {target.Pid}", show);
        Assert.Contains("codec       zstd", show);
        Assert.Contains(" heap ", show);
        Assert.Matches(@"ratio [0-9]+\.[0-9]{2}", show);

        (code, show) = Run("image", "show", image, "--json");
        Assert.True(code == 0, show);
        using (var json = JsonDocument.Parse(show))
        {
            var root = json.RootElement;
            Assert.Equal(target.Pid, root.GetProperty("pid").GetInt32());
            Assert.True(root.GetProperty("stored_bytes").GetInt64() * 3 < root.GetProperty("page_bytes").GetInt64());
            Assert.Equal(root.GetProperty("page_bytes").GetInt64(), root.GetProperty("vmas").EnumerateArray().Sum(v => v.GetProperty("page_bytes").GetInt64()));
        }

        (code, var stats) = Run("image", "stats", dir, "--json");
        Assert.True(code == 0, stats);
        using (var json = JsonDocument.Parse(stats))
        {
            var total = json.RootElement.GetProperty("total");
            Assert.Equal(2, total.GetProperty("images").GetInt32());
            Assert.Equal(1, total.GetProperty("invalid").GetInt32());
        }
        (code, stats) = Run("image", "stats", dir);
        Assert.Contains("2 images (1 invalid)", stats);
        Assert.Contains("junk.img: not a memcr image", stats);

        (code, var bad) = Run("image", "verify", Path.Combine(dir, "junk.img"));
        Assert.Equal(1, code);
        Assert.Contains("not a memcr image", bad);
        (code, bad) = Run("image", "frobnicate", image);
        Assert.Equal(2, code);

        memcr.PressEnter();
        Assert.True(memcr.WaitForExit() == 0, memcr.Output);
        target.AssertIntact();
        Directory.Delete(dir, recursive: true);
    }
}
