using System.Globalization;
using System.Text;
using System.Text.Json;
using Memcr.Image;

namespace Memcr.Cli;

/// <summary>
/// memcr image show|verify|decode|stats: looks into images. Output is for people unless --json.
/// Exit codes: 0 done (verify: the image is valid), 1 the image is invalid, 2 usage or I/O error.
/// </summary>
internal static class ImageTool
{
    public const string Usage = """
        memcr image show FILE [--json] [--key-file PATH]
        memcr image verify FILE [--json] [--key-file PATH]
        memcr image decode FILE --json [--pages] [--key-file PATH]
        memcr image stats DIR [--json]
          show    header, VMA table, pages and stored bytes per VMA, codec, compression ratio
          verify  check every record and checksum (and, with the key of an encrypted image, decrypt
                  and authenticate every record); exit 0 if the image is valid, 1 if not
          decode  everything in the image but the page bytes, as JSON; --pages adds them (base64)
          stats   every pages-*.img image in DIR: sizes, codecs, ratios, and the totals
          --key-file PATH  key of an encrypted image (also MEMCR_KEY_FILE)
        exit status: 0 done (verify: valid), 1 the image is invalid, 2 usage or I/O error
        """;

    private static readonly IReadOnlyList<OptionSpec> Specs =
    [
        new('h', "help", ArgumentKind.None),
        new('\0', "json", ArgumentKind.None),
        new('\0', "pages", ArgumentKind.None),
        new('\0', "key-file", ArgumentKind.Required),
    ];

    private sealed record Options(string Command, string Target, bool Json, bool Pages, string? KeyFile);

    public static int Run(string[] args)
    {
        Options o;
        try
        {
            var (options, operands) = GetOpt.Parse(args, Specs);
            if (options.Any(x => x.Spec.Long == "help"))
            {
                Console.Out.WriteLine(Usage);
                return 0;
            }
            if (operands.Count != 2 || operands[0] is not ("show" or "verify" or "decode" or "stats"))
                throw new GetOptException(operands.Count == 0 ? "a command is required" : $"expected a command and one FILE or DIR, got '{string.Join(' ', operands)}'");
            string? keyFile = options.LastOrDefault(x => x.Spec.Long == "key-file").Value;
            if (keyFile is null && Environment.GetEnvironmentVariable(MemcrArguments.KeyFileVariable) is { Length: > 0 } fromEnvironment)
                keyFile = fromEnvironment;
            o = new Options(operands[0], operands[1], options.Any(x => x.Spec.Long == "json"), options.Any(x => x.Spec.Long == "pages"), keyFile);
            if (o.Command == "decode" && !o.Json)
                throw new GetOptException("decode writes JSON: add --json");
            if (o.Pages && o.Command != "decode")
                throw new GetOptException("--pages goes with decode");
        }
        catch (GetOptException e)
        {
            Console.Error.WriteLine($"memcr image: {e.Message}");
            Console.Error.WriteLine(Usage);
            return 2;
        }

        try
        {
            return o.Command switch
            {
                "show" => Show(o),
                "verify" => Verify(o),
                "decode" => Decode(o),
                _ => Stats(o),
            };
        }
        catch (ImageFormatException e)
        {
            Console.Error.WriteLine($"memcr image {o.Command}: {e.Message}");
            return 1;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ImageKeyException)
        {
            Console.Error.WriteLine($"memcr image {o.Command}: {e.Message}");
            return 2;
        }
    }

    private static ImageReader Open(Options o)
    {
        byte[]? key = o.KeyFile is null ? null : ImageKey.Load(o.KeyFile);
        return ImageReader.Open(o.Target, key: key);
    }

    private static string Arch(ushort machine) => machine switch
    {
        62 => "x86_64",
        183 => "aarch64",
        _ => $"e_machine {machine}",
    };

    private static string Flags(ImageFlags flags) =>
        flags == ImageFlags.None ? "none" : string.Join(", ", new[] { (ImageFlags.FilePages, "file-pages"), (ImageFlags.Digest, "digest"), (ImageFlags.Packed, "packed") }
            .Where(f => (flags & f.Item1) != 0).Select(f => f.Item2));

    private static string Ratio(ulong pages, ulong stored) => stored == 0 ? (pages == 0 ? "-" : "inf") : ((double)pages / stored).ToString("F2", CultureInfo.InvariantCulture);

    /// <summary>Per-VMA totals from the index: records never span two VMAs.</summary>
    private sealed record VmaStats(ImageVma Vma)
    {
        public int Records { get; set; }
        public ulong Pages { get; set; }
        public ulong Stored { get; set; }
        public int Zero { get; set; }
        public int Raw { get; set; }
        public int Compressed { get; set; }
    }

    private static List<VmaStats> PerVma(ImageReader image)
    {
        var stats = image.Vmas.Select(v => new VmaStats(v)).ToList();
        int overhead = image.Header.Encryption == Encryption.None ? 0 : ImageFormat.TagSize;
        int v = 0;
        foreach (var e in image.Index)
        {
            while (v < stats.Count && stats[v].Vma.End <= e.Address)
                v++;
            if (v == stats.Count || e.Address < stats[v].Vma.Start)
                throw new ImageFormatException(image.Path, 0, $"page record at 0x{e.Address:x} lies in no VMA of the VMA table");
            var s = stats[v];
            s.Records++;
            s.Pages += (ulong)e.Length;
            s.Stored += (ulong)e.StoredLength;
            // The stored length tells how a record is kept: nothing (all zeros), as is, or compressed.
            if (e.StoredLength == overhead && image.Header.Packed && image.Header.Codec != Codec.None)
                s.Zero++;
            else if (e.StoredLength == e.Length + overhead)
                s.Raw++;
            else
                s.Compressed++;
        }
        return stats;
    }

    private static int Show(Options o)
    {
        using var image = Open(o);
        var h = image.Header;
        var vmas = PerVma(image);
        if (o.Json)
        {
            WriteJson(w =>
            {
                WriteSummary(w, image);
                w.WriteStartArray("vmas");
                foreach (var s in vmas)
                {
                    w.WriteStartObject();
                    WriteVma(w, s.Vma);
                    w.WriteNumber("records", s.Records);
                    w.WriteNumber("pages", s.Pages / (ulong)h.PageSize);
                    w.WriteNumber("page_bytes", s.Pages);
                    w.WriteNumber("stored_bytes", s.Stored);
                    w.WriteNumber("zero_records", s.Zero);
                    w.WriteNumber("raw_records", s.Raw);
                    w.WriteNumber("compressed_records", s.Compressed);
                    w.WriteEndObject();
                }
                w.WriteEndArray();
            });
            return 0;
        }
        var text = new StringBuilder();
        text.AppendLine(CultureInfo.InvariantCulture, $"image       {image.Path}");
        text.AppendLine(CultureInfo.InvariantCulture, $"format      version {ImageFormat.Version}, {image.Length} bytes, id {h.ImageId:x16}");
        text.AppendLine(CultureInfo.InvariantCulture, $"process     pid {h.Pid}, checkpointed {h.Created.UtcDateTime:yyyy-MM-dd HH:mm:ss.fff} UTC");
        text.AppendLine(CultureInfo.InvariantCulture, $"system      {Arch(h.Architecture)}, page size {h.PageSize}");
        text.AppendLine(CultureInfo.InvariantCulture, $"flags       {Flags(h.Flags)}");
        text.AppendLine(CultureInfo.InvariantCulture, $"codec       {CodecName(h.Codec)}");
        text.AppendLine(CultureInfo.InvariantCulture, $"encryption  {ImageCipher.Name(h.Encryption)}{(h.Encryption == Encryption.None ? "" : image.CanDecrypt ? " (key checked)" : " (no key given)")}");
        text.AppendLine(CultureInfo.InvariantCulture, $"digest      {(image.Digest is null ? "none" : Convert.ToHexString(image.Digest).ToLowerInvariant())}");
        text.AppendLine(CultureInfo.InvariantCulture, $"pages       {image.PageBytes / (ulong)h.PageSize} ({image.PageBytes / 1024} kB) in {image.Index.Count} records, stored in {image.StoredBytes / 1024} kB, ratio {Ratio(image.PageBytes, image.StoredBytes)}");
        text.AppendLine(CultureInfo.InvariantCulture, $"VMAs        {image.Vmas.Count}");
        text.AppendLine("  start            end              prot kind   records    pages  saved kB stored kB  ratio  zero/raw/compressed");
        foreach (var s in vmas)
        {
            text.AppendLine(CultureInfo.InvariantCulture,
                $"  {s.Vma.Start:x16} {s.Vma.End:x16} {Prot(s.Vma.Protection)}  {KindName(s.Vma.Kind),-5} {s.Records,8} {s.Pages / (ulong)h.PageSize,8} {s.Pages / 1024,9} {s.Stored / 1024,9} {Ratio(s.Pages, s.Stored),6}  {s.Zero}/{s.Raw}/{s.Compressed}");
        }
        Console.Out.Write(text.ToString());
        return 0;
    }

    private static int Verify(Options o)
    {
        using var image = Open(o);
        bool decode = image.Header.Encryption == Encryption.None || image.CanDecrypt;
        string? failure = null;
        try
        {
            image.Verify(Math.Max(1, Environment.ProcessorCount), decode: decode);
        }
        catch (ImageFormatException e)
        {
            failure = e.Message;
        }
        string checkedText = decode
            ? "every record's header, payload and content checksum" + (image.Header.Encryption == Encryption.None ? "" : ", decryption and authentication")
            : "every record's header and payload checksum (encrypted: pages not decrypted without --key-file)";
        if (o.Json)
        {
            WriteJson(w =>
            {
                w.WriteString("image", image.Path);
                w.WriteBoolean("valid", failure is null);
                if (failure is not null)
                    w.WriteString("error", failure);
                w.WriteNumber("records", image.Index.Count);
                w.WriteBoolean("decoded", decode);
                w.WriteBoolean("digest_checked", image.Digest is not null && failure is null);
            });
        }
        else if (failure is null)
        {
            Console.Out.WriteLine($"{image.Path}: OK, {image.Index.Count} page records; checked {checkedText}{(image.Digest is null ? "" : ", and the whole-image digest")}");
        }
        else
        {
            Console.Out.WriteLine($"{image.Path}: INVALID: {failure}");
        }
        return failure is null ? 0 : 1;
    }

    private static int Decode(Options o)
    {
        using var image = Open(o);
        if (o.Pages && image.Header.Encryption != Encryption.None && !image.CanDecrypt)
            throw new ImageKeyException($"{image.Path} is encrypted: --pages needs its key (--key-file)");
        using var decoder = image.CreateDecoder();
        WriteJson(w =>
        {
            WriteSummary(w, image);
            w.WriteStartArray("vmas");
            foreach (var v in image.Vmas)
            {
                w.WriteStartObject();
                WriteVma(w, v);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteStartArray("records");
            var batches = image.PlanBatches(4 << 20);
            int size = batches.Count == 0 ? 4096 : batches.Max(b => b.Length);
            var buffer = new byte[size];
            var pages = new byte[image.Index.Count == 0 ? 0 : image.Index.Max(e => e.Length)];
            foreach (var batch in batches)
            {
                var headers = image.ReadBatch(batch, buffer);
                for (int i = batch.First; i < batch.First + batch.Count; i++)
                {
                    var r = headers[i - batch.First];
                    w.WriteStartObject();
                    w.WriteNumber("number", r.Sequence);
                    w.WriteNumber("file_offset", image.Index[i].FileOffset);
                    w.WriteString("address", $"0x{r.Address:x}");
                    w.WriteNumber("page_bytes", r.OriginalLength);
                    w.WriteNumber("stored_bytes", r.StoredLength);
                    w.WriteString("codec", CodecName(r.Codec));
                    w.WriteString("encryption", ImageCipher.Name(r.Encryption));
                    w.WriteString("payload_checksum", $"{r.PayloadChecksum:x16}");
                    w.WriteString("content_checksum", $"{r.ContentChecksum:x16}");
                    if (o.Pages)
                    {
                        image.Decode(batch, buffer, headers, i, decoder, pages.AsSpan(0, r.OriginalLength));
                        w.WriteBase64String("pages", pages.AsSpan(0, r.OriginalLength));
                    }
                    w.WriteEndObject();
                }
            }
            w.WriteEndArray();
        });
        return 0;
    }

    private static int Stats(Options o)
    {
        if (!Directory.Exists(o.Target))
            throw new IOException($"{o.Target} is not a directory");
        var files = Directory.GetFiles(o.Target, "*.img").Order(StringComparer.Ordinal).ToList();
        var rows = new List<(string File, ImageReader? Image, long Size, string? Error)>();
        try
        {
            foreach (var f in files)
            {
                try
                {
                    rows.Add((f, ImageReader.Open(f), new FileInfo(f).Length, null));
                }
                catch (Exception e) when (e is ImageFormatException or IOException or UnauthorizedAccessException)
                {
                    rows.Add((f, null, File.Exists(f) ? new FileInfo(f).Length : 0, e is ImageFormatException i ? i.Problem : e.Message));
                }
            }
            var good = rows.Where(r => r.Image is not null).ToList();
            ulong pages = good.Aggregate(0UL, (t, r) => t + r.Image!.PageBytes);
            ulong stored = good.Aggregate(0UL, (t, r) => t + r.Image!.StoredBytes);
            long size = rows.Sum(r => r.Size);
            if (o.Json)
            {
                WriteJson(w =>
                {
                    w.WriteString("directory", o.Target);
                    w.WriteStartArray("images");
                    foreach (var r in rows)
                    {
                        w.WriteStartObject();
                        w.WriteString("file", r.File);
                        w.WriteNumber("file_bytes", r.Size);
                        if (r.Image is { } i)
                        {
                            w.WriteNumber("pid", i.Header.Pid);
                            w.WriteString("created", i.Header.Created);
                            w.WriteNumber("page_bytes", i.PageBytes);
                            w.WriteNumber("stored_bytes", i.StoredBytes);
                            w.WriteString("codec", CodecName(i.Header.Codec));
                            w.WriteString("encryption", ImageCipher.Name(i.Header.Encryption));
                        }
                        else
                        {
                            w.WriteString("error", r.Error);
                        }
                        w.WriteEndObject();
                    }
                    w.WriteEndArray();
                    w.WriteStartObject("total");
                    w.WriteNumber("images", rows.Count);
                    w.WriteNumber("invalid", rows.Count - good.Count);
                    w.WriteNumber("file_bytes", size);
                    w.WriteNumber("page_bytes", pages);
                    w.WriteNumber("stored_bytes", stored);
                    w.WriteEndObject();
                });
                return 0;
            }
            var text = new StringBuilder();
            text.AppendLine("      pid  checkpointed (UTC)        file kB  pages kB  ratio  codec  encryption   file");
            foreach (var r in rows)
            {
                if (r.Image is { } i)
                {
                    text.AppendLine(CultureInfo.InvariantCulture,
                        $"{i.Header.Pid,9}  {i.Header.Created.UtcDateTime:yyyy-MM-dd HH:mm:ss} {r.Size / 1024,9} {i.PageBytes / 1024,9} {Ratio(i.PageBytes, i.StoredBytes),6}  {CodecName(i.Header.Codec),-5}  {ImageCipher.Name(i.Header.Encryption),-11}  {Path.GetFileName(r.File)}");
                }
                else
                {
                    text.AppendLine(CultureInfo.InvariantCulture, $"{"?",9}  {"invalid",-19} {r.Size / 1024,9} {"",9} {"",6}  {"",5}  {"",-11}  {Path.GetFileName(r.File)}: {r.Error}");
                }
            }
            text.AppendLine(CultureInfo.InvariantCulture,
                $"{rows.Count} images ({rows.Count - good.Count} invalid), {size / 1024} kB on disk, {pages / 1024} kB of pages, ratio {Ratio(pages, stored)}");
            Console.Out.Write(text.ToString());
            return 0;
        }
        finally
        {
            foreach (var r in rows)
                r.Image?.Dispose();
        }
    }

    private static string CodecName(Codec codec) => codec switch
    {
        Codec.None => "none",
        Codec.Lz4 => "lz4",
        Codec.Zstd => "zstd",
        Codec.Zero => "zero",
        _ => $"unknown ({(byte)codec})",
    };

    private static string KindName(VmaKind kind) => kind switch
    {
        VmaKind.Anonymous => "anon",
        VmaKind.Heap => "heap",
        VmaKind.Stack => "stack",
        VmaKind.File => "file",
        _ => $"?{(ushort)kind}",
    };

    private static string Prot(ushort p) => $"{((p & 1) != 0 ? 'r' : '-')}{((p & 2) != 0 ? 'w' : '-')}{((p & 4) != 0 ? 'x' : '-')}";

    private static void WriteSummary(Utf8JsonWriter w, ImageReader image)
    {
        var h = image.Header;
        w.WriteString("image", image.Path);
        w.WriteNumber("format_version", ImageFormat.Version);
        w.WriteNumber("file_bytes", image.Length);
        w.WriteNumber("pid", h.Pid);
        w.WriteString("created", h.Created);
        w.WriteString("architecture", Arch(h.Architecture));
        w.WriteNumber("page_size", h.PageSize);
        w.WriteString("image_id", $"{h.ImageId:x16}");
        w.WriteStartArray("flags");
        foreach (var f in Flags(h.Flags).Split(", ", StringSplitOptions.RemoveEmptyEntries).Where(f => f != "none"))
            w.WriteStringValue(f);
        w.WriteEndArray();
        w.WriteString("codec", CodecName(h.Codec));
        w.WriteString("encryption", ImageCipher.Name(h.Encryption));
        if (image.Digest is not null)
            w.WriteString("digest", Convert.ToHexString(image.Digest).ToLowerInvariant());
        w.WriteNumber("records", image.Index.Count);
        w.WriteNumber("pages", image.PageBytes / (ulong)h.PageSize);
        w.WriteNumber("page_bytes", image.PageBytes);
        w.WriteNumber("stored_bytes", image.StoredBytes);
    }

    private static void WriteVma(Utf8JsonWriter w, ImageVma v)
    {
        w.WriteString("start", $"0x{v.Start:x}");
        w.WriteString("end", $"0x{v.End:x}");
        w.WriteString("prot", Prot(v.Protection));
        w.WriteString("kind", KindName(v.Kind));
        w.WriteNumber("file_offset", v.Offset);
        w.WriteNumber("saved_bytes", v.SavedBytes);
    }

    private static void WriteJson(Action<Utf8JsonWriter> body)
    {
        using var stdout = Console.OpenStandardOutput();
        using (var w = new Utf8JsonWriter(stdout, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            body(w);
            w.WriteEndObject();
        }
        stdout.Write("\n"u8);
    }
}
