namespace Memcr.CriuImages.Tests;

/// <summary>The CRIU 4.2 dumps in tests/fixtures/criu-images, with what crit 4.2 printed for them.</summary>
public static class Fixtures
{
    public static string Root { get; } = Find();

    public static IReadOnlyList<string> Scenarios { get; } = ["counter-shelljob", "count-sh", "tree", "http-tcp"];

    private static string Find()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, "tests", "fixtures", "criu-images");
            if (Directory.Exists(candidate))
                return candidate;
        }
        throw new InvalidOperationException($"tests/fixtures/criu-images not found above {AppContext.BaseDirectory}");
    }

    public static string Images(string scenario) => Path.Combine(Root, scenario, "images");

    public static string Crit(string scenario) => Path.Combine(Root, scenario, "crit");

    /// <summary>Every image of every scenario that crit decodes (all but the raw pages-N.img).</summary>
    public static TheoryData<string, string> AllImages()
    {
        var data = new TheoryData<string, string>();
        foreach (var s in Scenarios)
        {
            foreach (var f in Directory.GetFiles(Images(s)).Order(StringComparer.Ordinal))
            {
                if (!Path.GetFileName(f).StartsWith("pages-", StringComparison.Ordinal))
                    data.Add(s, Path.GetFileName(f));
            }
        }
        return data;
    }

    /// <summary>crit's JSON for an image: NAME.json for NAME.img (and stats-dump.json for stats-dump).</summary>
    public static string CritJsonOf(string scenario, string image) =>
        Path.Combine(Crit(scenario), Path.GetFileNameWithoutExtension(image) + ".json");
}
