using System.Diagnostics;
using Memcr.IntegrationTests.Harness;

namespace Memcr.IntegrationTests;

/// <summary>memcr crit, the NativeAOT binary, with crit's verbs on the CRIU 4.2 fixtures.</summary>
public sealed class CritCliTests
{
    private static readonly string Fixtures = Path.Combine(Repo.Root, "tests", "fixtures", "criu-images");

    private static string Tree(string file) => Path.Combine(Fixtures, "tree", "images", file);

    private static string TreeCrit(string file) => Path.Combine(Fixtures, "tree", "crit", file);

    /// <summary>Runs memcr (or <paramref name="file"/>) with stdin from <paramref name="stdin"/>; returns exit code, stdout bytes, stderr.</summary>
    private static (int Code, byte[] Stdout, string Stderr) Run(byte[]? stdin, string[] args, string? file = null)
    {
        var psi = new ProcessStartInfo(file ?? Repo.Memcr) { RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args)
            psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync();
        var stdout = new MemoryStream();
        var copy = p.StandardOutput.BaseStream.CopyToAsync(stdout);
        if (stdin is not null)
            p.StandardInput.BaseStream.Write(stdin);
        p.StandardInput.Close();
        Assert.True(p.WaitForExit(TimeSpan.FromMinutes(1)), "memcr crit did not finish");
        copy.Wait();
        return (p.ExitCode, stdout.ToArray(), stderr.Result);
    }

    [Fact]
    public void Decode_FromStdinToStdout_IsCritsJsonAndANewLine()
    {
        var (code, stdout, stderr) = Run(File.ReadAllBytes(Tree("core-21930.img")), ["crit", "decode", "--pretty"]);
        Assert.True(code == 0, stderr);
        Assert.Equal(File.ReadAllText(TreeCrit("core-21930.json")) + "\n", System.Text.Encoding.UTF8.GetString(stdout));
    }

    [Fact]
    public void Encode_FromStdinToStdout_IsTheImage()
    {
        var (code, stdout, stderr) = Run(File.ReadAllBytes(TreeCrit("mm-21930.json")), ["crit", "encode"]);
        Assert.True(code == 0, stderr);
        Assert.Equal(File.ReadAllBytes(Tree("mm-21930.img")), stdout);
    }

    [Fact]
    public void DecodeAndEncode_WithFiles_RoundTrip()
    {
        string dir = Repo.NewScratchDir("crit");
        string json = Path.Combine(dir, "files.json");
        string img = Path.Combine(dir, "files.img");
        Assert.Equal(0, Run(null, ["crit", "decode", "-i", Tree("files.img"), "-o", json, "--pretty"]).Code);
        Assert.Equal(File.ReadAllText(TreeCrit("files.json")), File.ReadAllText(json));
        Assert.Equal(0, Run(null, ["crit", "encode", "--in", json, "--out", img]).Code);
        Assert.Equal(File.ReadAllBytes(Tree("files.img")), File.ReadAllBytes(img));
        Directory.Delete(dir, recursive: true);
    }

    [Theory]
    [InlineData("ps")]
    [InlineData("fds")]
    [InlineData("mems")]
    [InlineData("rss")]
    public void Explore_IsCritX(string view)
    {
        var (code, stdout, stderr) = Run(null, ["crit", "x", Path.Combine(Fixtures, "tree", "images"), view]);
        Assert.True(code == 0, stderr);
        Assert.Equal(File.ReadAllText(TreeCrit($"x-{view}.txt")), System.Text.Encoding.UTF8.GetString(stdout));
    }

    [Fact]
    public void ShowInfoStatsAndVerify_Work()
    {
        var show = Run(null, ["crit", "show", Tree("pipes-data.img"), "--nopl"]);
        Assert.Contains("\"extra\": \"... <15B>\"", System.Text.Encoding.UTF8.GetString(show.Stdout));
        var info = Run(null, ["crit", "info", Tree("pagemap-21930.img")]);
        Assert.Equal("{\n    \"magic\": \"PAGEMAP\",\n    \"count\": 22\n}\n", System.Text.Encoding.UTF8.GetString(info.Stdout));
        var stats = Run(null, ["crit", "x", Path.Combine(Fixtures, "tree", "images"), "stats"]);
        Assert.Contains("frozen time             12.947 ms", System.Text.Encoding.UTF8.GetString(stats.Stdout));
        var verify = Run(null, ["crit", "verify", Path.Combine(Fixtures, "tree", "images")]);
        Assert.Equal(0, verify.Code);
    }

    [Fact]
    public void RunAsCrit_TakesCritsVerbs()
    {
        string dir = Repo.NewScratchDir("crit-link");
        string link = Path.Combine(dir, "crit");
        File.CreateSymbolicLink(link, Repo.Memcr);
        var (code, stdout, _) = Run(null, ["x", Path.Combine(Fixtures, "tree", "images"), "ps"], link);
        Assert.Equal(0, code);
        Assert.Equal(File.ReadAllText(TreeCrit("x-ps.txt")), System.Text.Encoding.UTF8.GetString(stdout));
        Directory.Delete(dir, recursive: true);
    }

    [Fact]
    public void RawPagesFile_IsRefusedInOneLine()
    {
        var (code, stdout, stderr) = Run(null, ["crit", "decode", "-i", Tree("pages-1.img")]);
        Assert.Equal(1, code);
        Assert.Empty(stdout);
        Assert.StartsWith($"memcr crit decode: {Tree("pages-1.img")}: offset 0: unknown magic 0x", stderr, StringComparison.Ordinal);
        Assert.Single(stderr.TrimEnd('\n').Split('\n'));
    }

    [Fact]
    public void TruncatedImage_GivesNoOutputAndNoFile()
    {
        string dir = Repo.NewScratchDir("crit-trunc");
        string cut = Path.Combine(dir, "core.img");
        File.WriteAllBytes(cut, File.ReadAllBytes(Tree("core-21930.img"))[..200]);
        var (code, stdout, stderr) = Run(null, ["crit", "decode", "-i", cut]);
        Assert.Equal(1, code);
        Assert.Empty(stdout);
        Assert.Contains("truncated", stderr);
        Assert.Equal(1, Run(null, ["crit", "decode", "-i", cut, "-o", Path.Combine(dir, "out.json")]).Code);
        Assert.Equal([cut], Directory.GetFiles(dir));
        Directory.Delete(dir, recursive: true);
    }

    [Fact]
    public void BadJson_IsRefusedWithItsPathOrPosition()
    {
        var unknown = Run("{\"magic\": \"PSTREE\", \"entries\": [{\"pid\": 1, \"ppid\": 0, \"pgid\": 1, \"sid\": 1, \"x\": 2}]}"u8.ToArray(), ["crit", "encode"]);
        Assert.Equal(1, unknown.Code);
        Assert.Equal("memcr crit encode: stdin: $.entries[0]: unknown field 'x': pstree_entry has pid, ppid, pgid, sid, threads\n", unknown.Stderr);
        var broken = Run("{\"magic\": \"PSTREE\",\n \"entries\": [}"u8.ToArray(), ["crit", "encode"]);
        Assert.Equal(1, broken.Code);
        Assert.Equal("memcr crit encode: stdin: line 2, column 14: not valid JSON\n", broken.Stderr);
    }

    [Fact]
    public void Verify_ReportsProblemsAndExitsOne()
    {
        string dir = Repo.NewScratchDir("crit-verify");
        foreach (var f in Directory.GetFiles(Path.Combine(Fixtures, "tree", "images")))
            File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        File.Delete(Path.Combine(dir, "mm-21932.img"));
        var (code, stdout, _) = Run(null, ["crit", "verify", dir]);
        Assert.Equal(1, code);
        Assert.Contains($"{dir}/mm-21932.img: missing (or unreadable) for pid 21932", System.Text.Encoding.UTF8.GetString(stdout));
        Directory.Delete(dir, recursive: true);
    }

    [Fact]
    public void Usage_ErrorsExitTwo()
    {
        Assert.Equal(2, Run(null, ["crit", "frobnicate"]).Code);
        Assert.Equal(2, Run(null, ["crit", "x", Fixtures, "pstree"]).Code);
        Assert.Equal(2, Run(null, ["crit", "show"]).Code);
        Assert.Equal(0, Run(null, ["crit", "--help"]).Code);
    }
}
