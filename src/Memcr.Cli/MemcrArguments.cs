using System.Globalization;
using Memcr.Engine;
using Memcr.Image;

namespace Memcr.Cli;

/// <summary>The memcr command line, parsed.</summary>
public sealed record MemcrArguments
{
    public bool Help { get; init; }
    public bool Version { get; init; }
    public int? Pid { get; init; }
    public string DumpDir { get; init; } = "/tmp";
    public bool NoWait { get; init; }
    public bool ProcMem { get; init; }
    public bool RssFile { get; init; }
    public bool Verbose { get; init; }
    public bool KeepCache { get; init; }

    /// <summary>--lazy: resume at once and bring pages back on demand; --lazy=auto falls back to an eager restore where it cannot.</summary>
    public LazyMode Lazy { get; init; }

    /// <summary>--incremental: keep the image after the restore and track writes, so that the next checkpoint saves only what changed.</summary>
    public bool Incremental { get; init; }

    /// <summary>--forget (with -p): end the write tracking of the process and remove its kept images.</summary>
    public bool Forget { get; init; }
    public string? ParasiteSocketDir { get; init; }
    public string? Listen { get; init; }
    public int? ListenGid { get; init; }
    public string? ListenAddress { get; init; }
    public TimeSpan? Timeout { get; init; }
    public Codec Codec { get; init; }
    public bool Checksum { get; init; }
    public Encryption Encryption { get; init; }

    /// <summary>Bytes of I/O buffers all checkpoints and restores may hold at once (--buffer-budget).</summary>
    public long BufferBudget { get; init; } = Memcr.Linux.Memory.MemoryBudget.DefaultBytes;

    /// <summary>File of the persistent encryption key (--key-file, or MEMCR_KEY_FILE when -e is given).</summary>
    public string? KeyFile { get; init; }

    /// <summary>The environment variable naming a key file, used when -e is given without --key-file.</summary>
    public const string KeyFileVariable = "MEMCR_KEY_FILE";

    public static readonly IReadOnlyList<string> Codecs = ["lz4", "zstd"];

    /// <summary>Cipher names -e takes: the original's CBC names are accepted and mean GCM of the same key size.</summary>
    public static readonly IReadOnlyList<string> Ciphers = ["aes-128-gcm", "aes-192-gcm", "aes-256-gcm", "aes-128-cbc", "aes-192-cbc", "aes-256-cbc"];

    public static readonly IReadOnlyList<OptionSpec> Specs =
    [
        new('h', "help", ArgumentKind.None),
        new('p', "pid", ArgumentKind.Required),
        new('d', "dir", ArgumentKind.Required),
        new('S', "parasite-socket-dir", ArgumentKind.Required),
        new('G', "parasite-socket-gid", ArgumentKind.Required),
        new('N', "parasite-socket-netns", ArgumentKind.None),
        new('l', "listen", ArgumentKind.Required),
        new('g', "listen-gid", ArgumentKind.Required),
        new('n', "no-wait", ArgumentKind.None, LongAlias: "nowait"),
        new('m', "proc-mem", ArgumentKind.None),
        new('f', "rss-file", ArgumentKind.None),
        new('z', "compress", ArgumentKind.Optional, Values: Codecs),
        new('c', "checksum", ArgumentKind.None),
        new('e', "encrypt", ArgumentKind.Optional, Values: Ciphers),
        new('\0', "key-file", ArgumentKind.Required),
        new('\0', "listen-address", ArgumentKind.Required),
        new('t', "timeout", ArgumentKind.Required),
        new('V', "version", ArgumentKind.None),
        new('\0', "verbose", ArgumentKind.None),
        new('\0', "keep-cache", ArgumentKind.None),
        new('\0', "buffer-budget", ArgumentKind.Required),
        new('\0', "lazy", ArgumentKind.Optional, Values: ["auto"]),
        new('\0', "incremental", ArgumentKind.None),
        new('\0', "forget", ArgumentKind.None),
    ];

    public static MemcrArguments Parse(IReadOnlyList<string> args, Func<string, string?>? environment = null)
    {
        environment ??= Environment.GetEnvironmentVariable;
        var (options, operands) = GetOpt.Parse(args, Specs);
        if (operands.Count > 0)
            throw new GetOptException($"unexpected argument '{operands[0]}'");
        var result = new MemcrArguments();
        foreach (var o in options)
        {
            result = o.Spec.Long switch
            {
                "help" => result with { Help = true },
                "version" => result with { Version = true },
                "pid" => result with { Pid = ParsePid(o.Value!) },
                "dir" => result with { DumpDir = o.Value! },
                "no-wait" => result with { NoWait = true },
                "proc-mem" => result with { ProcMem = true },
                "rss-file" => result with { RssFile = true },
                "verbose" => result with { Verbose = true },
                "keep-cache" => result with { KeepCache = true },
                "lazy" => result with
                {
                    Lazy = o.Value is null ? LazyMode.On
                        : o.Value.Equals("auto", StringComparison.OrdinalIgnoreCase) ? LazyMode.Auto
                        : throw new GetOptException($"invalid --lazy '{o.Value}': give --lazy or --lazy=auto"),
                },
                "incremental" => result with { Incremental = true },
                "forget" => result with { Forget = true },
                "compress" => result with { Codec = ParseCodec(o.Value) },
                "checksum" => result with { Checksum = true },
                "encrypt" => result with { Encryption = ParseCipher(o.Value) },
                "key-file" => result with { KeyFile = o.Value },
                "listen" => result with { Listen = o.Value },
                "listen-gid" => result with { ListenGid = ParseGid(o.Value!) },
                "listen-address" => result with { ListenAddress = o.Value },
                "timeout" => result with { Timeout = ParseTimeout(o.Value!) },
                "buffer-budget" => result with { BufferBudget = ParseSize(o.Value!) },
                // The original's parasite socket: we inject no parasite, so there is no socket to place.
                "parasite-socket-dir" => result with { ParasiteSocketDir = o.Value },
                "parasite-socket-gid" or "parasite-socket-netns" => result,
                _ => throw new GetOptException($"option '--{o.Spec.Long}' is not handled"),
            };
        }
        if (result.KeyFile is not null && result.Encryption == Encryption.None)
            result = result with { Encryption = Encryption.Aes256Gcm };
        if (result.Encryption != Encryption.None && result.KeyFile is null && environment(KeyFileVariable) is { Length: > 0 } fromEnvironment)
            result = result with { KeyFile = fromEnvironment };
        return result;
    }

    /// <summary>A group id, or a group name looked up in /etc/group.</summary>
    private static int ParseGid(string text)
    {
        if (int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int gid))
            return gid;
        try
        {
            foreach (string line in File.ReadLines("/etc/group"))
            {
                var fields = line.Split(':');
                if (fields.Length > 2 && fields[0] == text && int.TryParse(fields[2], NumberStyles.None, CultureInfo.InvariantCulture, out gid))
                    return gid;
            }
        }
        catch (IOException)
        {
        }
        throw new GetOptException($"invalid group '{text}': not a group id, nor a group in /etc/group");
    }

    private static TimeSpan ParseTimeout(string text)
    {
        if (!double.TryParse(text, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out double seconds) || seconds <= 0 || seconds > 1e6)
            throw new GetOptException($"invalid timeout '{text}': give seconds > 0");
        return TimeSpan.FromSeconds(seconds);
    }

    /// <summary>A size in bytes, or with a K, M or G suffix (KiB, MiB, GiB); at least <see cref="Memcr.Linux.Memory.MemoryBudget.MinimumBytes"/>.</summary>
    internal static long ParseSize(string text)
    {
        var digits = text.AsSpan().TrimEnd("bB");
        long unit = 1;
        char suffix = digits.Length > 0 ? char.ToUpperInvariant(digits[^1]) : '\0';
        if (suffix is 'K' or 'M' or 'G')
        {
            unit = suffix switch { 'K' => 1L << 10, 'M' => 1L << 20, _ => 1L << 30 };
            digits = digits[..^1];
        }
        const long Least = Memcr.Linux.Memory.MemoryBudget.MinimumBytes;
        if (!long.TryParse(digits, NumberStyles.None, CultureInfo.InvariantCulture, out long n) || n > (1L << 40) / unit)
            throw new GetOptException($"invalid buffer budget '{text}': give a size such as 16M");
        if (n * unit < Least)
            throw new GetOptException($"buffer budget '{text}' is too small: a checkpoint needs at least {Least >> 20}M of buffers");
        return n * unit;
    }

    // The original accepts the algorithm names in either case (-z ZSTD, --compress=LZ4).
    private static Codec ParseCodec(string? name) => name?.ToLowerInvariant() switch
    {
        null or "lz4" => Codec.Lz4,
        "zstd" => Codec.Zstd,
        _ => throw new GetOptException($"invalid compression algorithm '{name}': use lz4 or zstd"),
    };

    // Cipher names are case-insensitive, as OpenSSL's EVP_get_cipherbyname is in the original.
    private static Encryption ParseCipher(string? name) => name?.ToLowerInvariant() switch
    {
        null or "aes-256-gcm" or "aes-256-cbc" => Encryption.Aes256Gcm,
        "aes-192-gcm" or "aes-192-cbc" => Encryption.Aes192Gcm,
        "aes-128-gcm" or "aes-128-cbc" => Encryption.Aes128Gcm,
        _ => throw new GetOptException($"invalid cipher '{name}': use one of {string.Join(", ", Ciphers)}"),
    };

    /// <summary>The checkpoint options these arguments ask for (the service fills in each request's pid).</summary>
    public Memcr.Engine.CheckpointOptions ToCheckpointOptions(int pid, byte[]? key) => new()
    {
        Pid = pid,
        DumpDir = DumpDir,
        UseProcMem = ProcMem,
        IncludeFileMappings = RssFile,
        KeepImageCached = KeepCache,
        Codec = Codec,
        Checksum = Checksum,
        Encryption = Encryption,
        Key = key,
        Lazy = Lazy,
        Incremental = Incremental,
        Budget = new Memcr.Linux.Memory.MemoryBudget(BufferBudget),
    };

    private static int ParsePid(string text)
    {
        if (!int.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int pid))
            throw new GetOptException($"invalid pid '{text}': not a number");
        if (pid <= 0)
            throw new GetOptException($"invalid pid {pid}: a pid must be > 0");
        return pid;
    }

    public const string Usage = """
        memcr [-h] [-p PID] [-d DIR] [-S DIR] [-G gid] [-N] [-l PORT|PATH] [-g gid] [-n] [-m] [-f] [-z [lz4|zstd]] [-c] [-e [ARG]] [-t SEC] [-V]
        memcr image show|verify|decode|stats ...   (memcr image --help)
        memcr crit decode|encode|show|info|x|verify ...   CRIU's image tool (memcr crit --help)
        options:
          -h --help                  help
          -p --pid PID               target process pid
          -d --dir DIR               dir where memory dump is stored (defaults to /tmp)
          -S --parasite-socket-dir DIR
                                     accepted for compatibility: this memcr injects no parasite and
                                     creates no parasite socket
          -G --parasite-socket-gid GID
                                     accepted for compatibility (see -S)
          -N --parasite-socket-netns accepted for compatibility (see -S)
          -l --listen PORT|PATH      work as a service: on TCP port PORT of 127.0.0.1, or on the
                                     UNIX socket PATH (created; a stale one is replaced)
          -g --listen-gid GID        give the UNIX socket this group (id or name) and mode 0660
             --listen-address ADDR   bind the TCP port to ADDR instead of 127.0.0.1 (anyone who
                                     can reach it can freeze processes)
          -n --no-wait               checkpoint and restore at once, without waiting for enter
          -m --proc-mem              read pages through /proc/PID/mem instead of process_vm_readv
          -f --rss-file              also save written pages of private file mappings and drop
                                     the pages of those mappings
          -z --compress [lz4|zstd]   compress memory dump, per 1 MiB record (lz4 when no algorithm
                                     is given); all-zero records take no space
          -c --checksum              store a whole-image digest and check it at restore, and read
                                     every page back from the process after restoring it (every
                                     record always has its own checksums)
          -e --encrypt [CIPHER]      encrypt memory dump with authenticated encryption: aes-256-gcm
                                     (default), aes-192-gcm or aes-128-gcm. The original's names
                                     aes-128-cbc, aes-192-cbc and aes-256-cbc are accepted and mean
                                     the GCM mode of the same key size. The key is random and lives
                                     only in this process unless a key file is given
             --key-file PATH         persistent key for -e (implies -e): 16, 24 or 32 bytes for
                                     aes-128/192/256, raw or as hex text. MEMCR_KEY_FILE names a key
                                     file when -e is given without --key-file
          -t --timeout SEC           bound each checkpoint (abandoned, the process left running)
                                     and, in service mode, each restore's answer (fractions allowed)
          -V --version               print version and exit
             --verbose               more detail, and stack traces on errors
             --keep-cache            leave the image in the page cache (by default it is written
                                     back and evicted so that the memory is really freed)
             --buffer-budget SIZE    memory for I/O buffers, shared by all checkpoints and restores
                                     at once (they wait for buffers rather than use more): 16M by
                                     default, at least 8M; K, M, G suffixes
             --lazy[=auto]           restore lazily: the process runs again at once and its pages
                                     come back as it touches them (userfaultfd) while the rest
                                     streams in; memcr exits once all are back. Refused up front
                                     where the kernel or the target cannot have it; with =auto
                                     the restore is eager there instead. With -l, every restore
                                     the service makes is lazy: it answers once the process runs
             --incremental           keep the image after the restore and track the process's
                                     writes (userfaultfd write-protect, Linux 6.7+): its next
                                     incremental checkpoint saves only the pages written since and
                                     restores the rest from the kept images. With -l, for every
                                     process. Ended by a checkpoint without it, by --forget, or
                                     when the process exits
             --forget                with -p: end the write tracking of the process and remove
                                     its kept images (memcr-client --forget asks a service)
        """;
}
