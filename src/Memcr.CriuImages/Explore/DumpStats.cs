using System.Globalization;

namespace Memcr.CriuImages.Explore;

/// <summary>
/// memcr crit x DIR stats: what stats-dump (and stats-restore) recorded (times are kept in
/// microseconds), and how much room the images take.
/// </summary>
public sealed class DumpStats(DumpDirectory dir)
{
    private const long PageSize = 4096;

    public void Show(TextWriter o)
    {
        if (File.Exists(Path.Combine(dir.Path, "stats-dump")))
            ShowDump(o, Stats("dump").Dump);
        if (File.Exists(Path.Combine(dir.Path, "stats-restore")) && Stats("restore").Restore is { } r)
        {
            o.WriteLine("restore");
            Row(o, "forking time", Ms(r.ForkingTime));
            Row(o, "restore time", Ms(r.RestoreTime));
            Row(o, "pages compared", r.PagesCompared.ToString(CultureInfo.InvariantCulture));
            Row(o, "pages skipped (COW)", r.PagesSkippedCow.ToString(CultureInfo.InvariantCulture));
            if (r.HasPagesRestored)
                Row(o, "pages restored", Pages(r.PagesRestored));
        }
        var files = new DirectoryInfo(dir.Path).GetFiles().OrderBy(f => f.Name, StringComparer.Ordinal).ToList();
        var pages = files.Where(f => f.Name.StartsWith("pages-", StringComparison.Ordinal)).ToList();
        o.WriteLine("images");
        Row(o, "page data", $"{Human(pages.Sum(f => f.Length))} in {pages.Count} pages-N.img");
        Row(o, "everything else", $"{Human(files.Except(pages).Sum(f => f.Length))} in {files.Count - pages.Count} files");
        Row(o, "total", $"{Human(files.Sum(f => f.Length))} in {files.Count} files");
    }

    private stats_entry Stats(string which)
    {
        using var r = CriuImageReader.Open(Path.Combine(dir.Path, $"stats-{which}"), ImageKinds.Stats);
        return r.ReadSingle<stats_entry>();
    }

    private static void ShowDump(TextWriter o, dump_stats_entry? d)
    {
        if (d is null)
            return;
        o.WriteLine("dump");
        Row(o, "freezing time", Ms(d.FreezingTime));
        Row(o, "frozen time", Ms(d.FrozenTime));
        Row(o, "memory dump time", Ms(d.MemdumpTime));
        Row(o, "memory write time", Ms(d.MemwriteTime));
        Row(o, "pages scanned", Pages(d.PagesScanned));
        Row(o, "pages skipped (parent)", Pages(d.PagesSkippedParent));
        Row(o, "pages written", Pages(d.PagesWritten));
        Row(o, "pages lazy", Pages(d.PagesLazy));
        if (d.HasShpagesScanned)
            Row(o, "shared pages scanned", Pages(d.ShpagesScanned));
        if (d.HasShpagesWritten)
            Row(o, "shared pages written", Pages(d.ShpagesWritten));
        if (d.HasIrmapResolve)
            Row(o, "irmap resolve", Ms(d.IrmapResolve));
    }

    private static void Row(TextWriter o, string what, string value) => o.WriteLine($"  {what,-24}{value}");

    private static string Ms(uint usec) => $"{(usec / 1000.0).ToString("0.###", CultureInfo.InvariantCulture)} ms";

    private static string Pages(ulong n) => $"{n} ({Human((long)n * PageSize)})";

    /// <summary>Bytes in binary units: "512 B", "16.3 MiB".</summary>
    public static string Human(long bytes)
    {
        string[] units = ["B", "KiB", "MiB", "GiB", "TiB"];
        double v = bytes;
        int u = 0;
        while (v >= 1024 && u < units.Length - 1)
        {
            v /= 1024;
            u++;
        }
        return u == 0 ? $"{bytes} B" : $"{v.ToString("0.0", CultureInfo.InvariantCulture)} {units[u]}";
    }
}
