// Measures Memcr.CriuImages: decoding a whole dump to crit's JSON and encoding it back (the tree
// fixture), and a 1 GiB pagemap/pages pair generated here: its JSON both ways, writing its pages,
// and reading them back through PagesReader, from the page cache and from the disk.
//
//   dotnet run -c Release --project bench/CritBench [FIXTURE_DIR] [SCRATCH_DIR] [GIB]
using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text.Json;
using Memcr.CriuImages;
using Memcr.CriuImages.Json;
using Memcr.CriuImages.Pages;

string fixture = args.Length > 0 ? args[0] : "tests/fixtures/criu-images/tree/images";
string scratch = args.Length > 1 ? args[1] : "/var/tmp";
int gib = args.Length > 2 ? int.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture) : 1;
const int Runs = 5;

var images = Directory.GetFiles(fixture).Where(f => !Path.GetFileName(f).StartsWith("pages-", StringComparison.Ordinal)).Order().ToList();
long imageBytes = images.Sum(f => new FileInfo(f).Length);
Console.WriteLine($"tree fixture: {images.Count} images, {imageBytes} bytes (pages-N.img left out)");
var jsons = new Dictionary<string, string>();
Measure("  decode all to JSON (pretty)", () =>
{
    foreach (var f in images)
    {
        using var r = CriuImageReader.Open(f);
        var w = new StringWriter();
        CritJson.Decode(r, w, pretty: true);
        jsons[f] = w.ToString();
    }
});
Measure("  encode all back from JSON", () =>
{
    foreach (var (f, json) in jsons)
    {
        using var doc = JsonDocument.Parse(json);
        using var o = new MemoryStream();
        CritJson.Encode(doc.RootElement, o, f);
    }
});

string dir = Path.Combine(scratch, $"critbench-{Environment.ProcessId}");
Directory.CreateDirectory(dir);
try
{
    long bytes = (long)gib << 30;
    const int RunPages = 512; // 2 MiB runs with a one-page hole between them, as a heap with gaps
    var chunk = new byte[RunPages * PageMap.PageSize];
    new Random(1).NextBytes(chunk);
    Console.WriteLine($"{gib} GiB of pages in {bytes / chunk.Length} runs of {RunPages} pages ({dir})");
    Measure("  write pagemap + pages", () =>
    {
        using var w = new PageImageWriter(dir, 1, 1);
        ulong address = 0x7f0000000000;
        for (long done = 0; done < bytes; done += chunk.Length)
        {
            chunk[0]++;
            w.Add(address, chunk, PageFlags.Lazy);
            address += (ulong)chunk.Length + PageMap.PageSize;
        }
    }, bytes, runs: 1);
    string pagemap = Path.Combine(dir, "pagemap-1.img");
    Console.WriteLine($"  pagemap-1.img {new FileInfo(pagemap).Length} bytes, pages-1.img {new FileInfo(Path.Combine(dir, "pages-1.img")).Length} bytes");
    string json = "";
    Measure("  pagemap to JSON", () =>
    {
        using var r = CriuImageReader.Open(pagemap);
        var w = new StringWriter();
        CritJson.Decode(r, w, pretty: true);
        json = w.ToString();
    });
    Measure("  pagemap from JSON", () =>
    {
        using var doc = JsonDocument.Parse(json);
        using var o = new MemoryStream();
        CritJson.Encode(doc.RootElement, o, pagemap);
    });
    var map = PageMap.Read(dir, 1);
    long sum = 0;
    void ReadAll()
    {
        using var reader = PagesReader.Open(dir, map);
        reader.ReadAll((_, data) => sum += data[0]);
    }
    Measure("  read all pages (page cache)", ReadAll, bytes);
    Measure("  read all pages (from disk)", ReadAll, bytes, before: () => Evict(Path.Combine(dir, "pages-1.img")));
    var sw = Stopwatch.StartNew();
    Evict(Path.Combine(dir, "pages-1.img"));
    using (var f = new FileStream(Path.Combine(dir, "pages-1.img"), FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.SequentialScan))
    {
        var buffer = new byte[8 << 20];
        while (f.Read(buffer) > 0)
        {
        }
    }
    Console.WriteLine($"  for comparison, a plain sequential read of the file from disk: {bytes / sw.Elapsed.TotalSeconds / 1e9:F2} GB/s");
    GC.KeepAlive(sum);
}
finally
{
    Directory.Delete(dir, recursive: true);
}

static void Measure(string what, Action action, long bytes = 0, int runs = Runs, Action? before = null)
{
    action(); // warm up: JIT, page cache
    var times = new List<double>();
    long allocated = 0;
    for (int i = 0; i < runs; i++)
    {
        before?.Invoke();
        long a = GC.GetAllocatedBytesForCurrentThread();
        var sw = Stopwatch.StartNew();
        action();
        times.Add(sw.Elapsed.TotalMilliseconds);
        allocated = GC.GetAllocatedBytesForCurrentThread() - a;
    }
    times.Sort();
    double median = times[times.Count / 2];
    string rate = bytes > 0 ? $", {bytes / (median / 1000) / 1e9:F2} GB/s" : "";
    Console.WriteLine($"{what,-34} median {median,8:F1} ms of {runs}{rate}, {allocated / 1024.0 / 1024.0:F1} MiB allocated");
}

static void Evict(string path)
{
    using var f = File.OpenHandle(path, FileMode.Open, FileAccess.Read);
    _ = Native.fdatasync(f.DangerousGetHandle().ToInt32());
    _ = Native.posix_fadvise(f.DangerousGetHandle().ToInt32(), 0, 0, 4 /* POSIX_FADV_DONTNEED */);
}

internal static partial class Native
{
    [LibraryImport("libc")]
    internal static partial int posix_fadvise(int fd, long offset, long length, int advice);

    [LibraryImport("libc")]
    internal static partial int fdatasync(int fd);
}
