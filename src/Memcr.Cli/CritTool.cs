using System.Text;
using System.Text.Json;
using Memcr.CriuImages;
using Memcr.CriuImages.Explore;
using Memcr.CriuImages.Json;

namespace Memcr.Cli;

/// <summary>
/// memcr crit: CRIU's image tool, with crit's verbs, options and output (decode, encode, show,
/// info, x), and two of ours: x DIR stats and verify DIR. Exit codes: 0 done, 1 a bad image or
/// JSON (verify: the dump has problems), 2 usage.
/// </summary>
internal static class CritTool
{
    public const string Usage = """
        memcr crit decode [-i IN] [-o OUT] [--pretty]   image -> JSON (stdin/stdout when IN/OUT are absent)
        memcr crit encode [-i IN] [-o OUT]              JSON -> image
        memcr crit show IN [--nopl]                     image -> JSON, pretty (--nopl: payloads sized, not shown)
        memcr crit info IN                              an image's kind and number of entries
        memcr crit x DIR ps|fds|mems|rss|stats          explore a dump: process tree, files, mappings,
                                                        resident pages, dump statistics
        memcr crit verify DIR                           check a dump: every image parses, pagemaps and
                                                        pages agree, fds have files, every process and
                                                        thread has its images; exit 0 if so, 1 if not
        The same verbs work when memcr is run as `crit` (a symlink).
        """;

    private static readonly IReadOnlyList<OptionSpec> Specs =
    [
        new('h', "help", ArgumentKind.None),
        new('i', "in", ArgumentKind.Required),
        new('o', "out", ArgumentKind.Required),
        new('\0', "pretty", ArgumentKind.None),
        new('\0', "nopl", ArgumentKind.None),
    ];

    private sealed record Options(string Verb, List<string> Operands, string? In, string? Out, bool Pretty, bool NoPayload);

    public static int Run(string[] args, string name = "memcr crit")
    {
        Options o;
        try
        {
            o = Parse(args);
        }
        catch (GetOptException e)
        {
            Console.Error.WriteLine($"{name}: {e.Message}");
            Console.Error.WriteLine(Usage);
            return 2;
        }
        if (o.Verb == "help")
        {
            Console.Out.WriteLine(Usage);
            return 0;
        }
        try
        {
            return o.Verb switch
            {
                "decode" or "show" => Decode(o),
                "encode" => Encode(o),
                "info" => Info(o),
                "x" => Explore(o),
                _ => Verify(o),
            };
        }
        catch (CriuImageException e)
        {
            Console.Error.WriteLine($"{name} {o.Verb}: {e.Message}");
            return 1;
        }
        catch (JsonException e)
        {
            Console.Error.WriteLine($"{name} {o.Verb}: {o.In ?? "stdin"}: line {e.LineNumber + 1}, column {e.BytePositionInLine + 1}: not valid JSON");
            return 1;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Console.Error.WriteLine($"{name} {o.Verb}: {e.Message}");
            return 1;
        }
    }

    private static Options Parse(string[] args)
    {
        var (options, operands) = GetOpt.Parse(args, Specs);
        if (options.Any(x => x.Spec.Long == "help") || operands is ["help"])
            return new Options("help", [], null, null, false, false);
        if (operands.Count == 0)
            throw new GetOptException("a verb is required: decode, encode, show, info, x or verify");
        string verb = operands[0];
        var rest = operands[1..];
        string? Value(string longName) => options.LastOrDefault(x => x.Spec.Long == longName).Value;
        bool Flag(string longName) => options.Any(x => x.Spec.Long == longName);
        var o = new Options(verb, rest, Value("in"), Value("out"), Flag("pretty"), Flag("nopl"));
        string[] allowed = verb switch
        {
            "decode" => ["in", "out", "pretty"],
            "encode" => ["in", "out"],
            "show" => ["nopl"],
            "info" or "x" or "verify" => [],
            _ => throw new GetOptException($"unknown verb '{verb}': use decode, encode, show, info, x or verify"),
        };
        if (options.FirstOrDefault(x => !allowed.Contains(x.Spec.Long)) is { Spec: not null } stray)
            throw new GetOptException($"{stray.Spelling} does not go with {verb}");
        int operandsWanted = verb switch { "decode" or "encode" => 0, "x" => 2, _ => 1 };
        if (rest.Count != operandsWanted)
            throw new GetOptException($"{verb} takes {operandsWanted switch { 0 => "no operands (use -i and -o)", 1 => "one operand", _ => "a directory and a view" }}, got {rest.Count}");
        if (verb == "x" && !DumpExplorer.Views.Append("stats").Contains(rest[1]))
            throw new GetOptException($"invalid view '{rest[1]}': choose from ps, fds, mems, rss, stats");
        return verb == "show" ? o with { In = rest[0], Pretty = true } : verb == "info" ? o with { In = rest[0] } : o;
    }

    private static int Decode(Options o)
    {
        using var input = OpenInput(o.In);
        using var reader = CriuImageReader.Open(input, o.In ?? "stdin");
        WriteOutput(o.Out, stream =>
        {
            using var w = new StreamWriter(stream, new UTF8Encoding(false), 1 << 16, leaveOpen: true) { NewLine = "\n" };
            CritJson.Decode(reader, w, o.Pretty, o.NoPayload);
            // crit ends the JSON with a new line only on stdout.
            if (o.Out is null)
                w.Write('\n');
        });
        return 0;
    }

    private static int Encode(Options o)
    {
        using var input = OpenInput(o.In);
        using var doc = JsonDocument.Parse(input, new JsonDocumentOptions { MaxDepth = 256 });
        WriteOutput(o.Out, stream => CritJson.Encode(doc.RootElement, stream, o.In ?? "stdin"));
        return 0;
    }

    private static int Info(Options o)
    {
        using var reader = CriuImageReader.Open(o.In!);
        int count = 0;
        foreach (var e in reader.ReadAllRaw())
        {
            if (!(reader.Kind.Layout == ImageLayout.Pagemap && e.Message is pagemap_head))
                count++;
        }
        Console.Out.Write($"{{\n    \"magic\": \"{reader.Kind.Name}\",\n    \"count\": {count}\n}}\n");
        return 0;
    }

    private static int Explore(Options o)
    {
        var dir = new DumpDirectory(o.Operands[0]);
        if (!Directory.Exists(dir.Path))
            throw new IOException($"{dir.Path}: no such directory");
        var output = new StringWriter { NewLine = "\n" };
        if (o.Operands[1] == "stats")
            new DumpStats(dir).Show(output);
        else
            new DumpExplorer(dir, output).Show(o.Operands[1]);
        Console.Out.Write(output.ToString());
        return 0;
    }

    private static int Verify(Options o)
    {
        var problems = new DumpVerifier(new DumpDirectory(o.Operands[0])).Check();
        foreach (var p in problems)
            Console.Out.WriteLine(p);
        Console.Out.WriteLine(problems.Count == 0 ? $"{o.Operands[0]}: the dump is consistent" : $"{o.Operands[0]}: {problems.Count} problem{(problems.Count > 1 ? "s" : "")}");
        return problems.Count == 0 ? 0 : 1;
    }

    private static Stream OpenInput(string? path) => path is null ? Console.OpenStandardInput() : File.OpenRead(path);

    /// <summary>
    /// Writes the output whole or not at all: to stdout once it is complete, or to a temporary file
    /// renamed at the end. A damaged image gives an error, never half a JSON document.
    /// </summary>
    private static void WriteOutput(string? path, Action<Stream> write)
    {
        if (path is null)
        {
            using var complete = new MemoryStream();
            write(complete);
            using var stdout = Console.OpenStandardOutput();
            complete.WriteTo(stdout);
            return;
        }
        string temp = $"{path}.tmp-{Environment.ProcessId}";
        try
        {
            using (var file = new FileStream(temp, FileMode.Create, FileAccess.Write))
                write(file);
            File.Move(temp, path, overwrite: true);
        }
        finally
        {
            File.Delete(temp);
        }
    }
}
