using System.Globalization;

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
    public string? ParasiteSocketDir { get; init; }

    /// <summary>Options of the original that this build accepts but cannot carry out yet.</summary>
    public List<string> Unsupported { get; init; } = [];

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
        new('z', "compress", ArgumentKind.Optional),
        new('c', "checksum", ArgumentKind.None),
        new('e', "encrypt", ArgumentKind.Optional),
        new('t', "timeout", ArgumentKind.Required),
        new('V', "version", ArgumentKind.None),
        new('\0', "verbose", ArgumentKind.None),
        new('\0', "keep-cache", ArgumentKind.None),
    ];

    public static MemcrArguments Parse(IReadOnlyList<string> args)
    {
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
                // The original's parasite socket: we inject no parasite, so there is no socket to place.
                "parasite-socket-dir" => result with { ParasiteSocketDir = o.Value },
                "parasite-socket-gid" or "parasite-socket-netns" => result,
                _ => result with { Unsupported = [.. result.Unsupported, $"-{o.Spec.Short} (--{o.Spec.Long})"] },
            };
        }
        return result;
    }

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
          -l --listen PORT|PATH      work as a service (not yet supported by this build)
          -g --listen-gid GID        group of the service socket (not yet supported)
          -n --no-wait               checkpoint and restore at once, without waiting for enter
          -m --proc-mem              read pages through /proc/PID/mem instead of process_vm_readv
          -f --rss-file              also save written pages of private file mappings and drop
                                     the pages of those mappings
          -z --compress [lz4|zstd]   compress memory dump (not yet supported)
          -c --checksum              whole-image digest (not yet supported; every record is
                                     always checksummed)
          -e --encrypt [ARG]         encrypt memory dump (not yet supported)
          -t --timeout SEC           time limit of each operation (not yet supported)
          -V --version               print version and exit
             --verbose               more detail, and stack traces on errors
             --keep-cache            leave the image in the page cache (by default it is written
                                     back and evicted so that the memory is really freed)
        """;
}
