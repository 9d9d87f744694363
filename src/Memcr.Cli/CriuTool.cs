using System.Globalization;
using Memcr.Dump;
using Memcr.Dump.Dumping;
using Memcr.Dump.Restoring;

namespace Memcr.Cli;

/// <summary>
/// CRIU mode: memcr dump, restore and check, with CRIU's options (also when the binary is run as
/// `criu`). Exit codes: 0 done (restore without -d: the restored root's exit status), 1 failure,
/// 2 usage.
/// </summary>
internal static class CriuTool
{
    public const string Usage = """
        memcr dump -t PID -D DIR [-j] [-R] [-l] [--tcp-established|--tcp-close] [--network-lock M] [-x] [-v[N]] [-o LOG]
        memcr restore -D DIR [-j] [-d] [-l] [--pidfile FILE] [--tcp-established|--tcp-close] [-x] [-v[N]] [-o LOG]
        memcr check
          -t --tree PID            the root of the process tree to dump
          -D --images-dir DIR      the directory of the images (CRIU's format)
          -j --shell-job           the tree is a job of a shell: it keeps (dump) or gets (restore) the
                                   terminal, session and process group of the shell
          -R --leave-running       let the tree run on after the dump (it is killed by default)
          -d --restore-detached    exit once the tree runs, instead of waiting for its root and
                                   exiting with its status
          -l --file-locks          dump and restore flock, POSIX and OFD file locks (without it, a
                                   dump of a process holding one is refused and a restore leaves
                                   them out)
             --pidfile FILE        write the restored root's pid to FILE
             --tcp-established     dump and restore established TCP connections (TCP repair
                                   mode: sequence numbers, options, queued bytes); without it
                                   a tree holding one is refused
             --tcp-close           dump established TCP connections without their state, and
                                   restore them as closed sockets
             --network-lock M      nftables (default): packets of the dumped connections are
                                   dropped from the dump until the restore, so that the peer
                                   is never reset; skip: no lock (the peer may see a reset)
          -x --ext-unix-sk         allow UNIX datagram sockets connected to a named socket
                                   outside the tree (restore connects them to that name again)
          -v[N] --verbosity[=N]    log level 0..4 (default 2); -v alone is 4
          -o --log-file FILE       log into FILE (relative to the images directory)
        """;

    private static readonly IReadOnlyList<OptionSpec> Specs =
    [
        new('h', "help", ArgumentKind.None),
        new('t', "tree", ArgumentKind.Required),
        new('D', "images-dir", ArgumentKind.Required),
        new('j', "shell-job", ArgumentKind.None),
        new('R', "leave-running", ArgumentKind.None),
        new('d', "restore-detached", ArgumentKind.None),
        new('\0', "pidfile", ArgumentKind.Required),
        new('l', "file-locks", ArgumentKind.None),
        new('\0', "tcp-established", ArgumentKind.None),
        new('\0', "tcp-close", ArgumentKind.None),
        new('v', "verbosity", ArgumentKind.Optional),
        new('o', "log-file", ArgumentKind.Required),
        new('\0', "network-lock", ArgumentKind.Required),
        new('x', "ext-unix-sk", ArgumentKind.None),
    ];

    public static int Run(string verb, string[] args, string name = "memcr")
    {
        List<ParsedOption> options;
        try
        {
            (options, var operands) = GetOpt.Parse(args, Specs);
            if (operands.Count > 0)
                throw new GetOptException($"unexpected argument '{operands[0]}'");
        }
        catch (GetOptException e)
        {
            Console.Error.WriteLine($"{name} {verb}: {e.Message}");
            Console.Error.WriteLine(Usage);
            return 2;
        }
        string? Value(string key) => options.LastOrDefault(o => o.Spec.Long == key).Value;
        bool Flag(string key) => options.Any(o => o.Spec.Long == key);
        if (Flag("help"))
        {
            Console.Out.WriteLine(Usage);
            return 0;
        }
        // As CRIU: -v raises the level by one (-vv by two), -vN sets it; 2 (warnings) by default.
        int level = 2;
        foreach (var v in options.Where(o => o.Spec.Long == "verbosity"))
        {
            if (v.Value is null || v.Value.All(c => c == 'v'))
                level += 1 + (v.Value?.Length ?? 0);
            else if (int.TryParse(v.Value, NumberStyles.None, CultureInfo.InvariantCulture, out int n))
                level = n;
            else
                return Refuse(name, verb, $"invalid verbosity '{v.Value}': give 0..4");
        }
        level = Math.Clamp(level, 0, 4);
        var arch = Memcr.Linux.Arch.CpuArchitecture.Current;
        if (!arch.HasCriuMode)
            return Refuse(name, verb, $"CRIU mode runs on x86_64 only: the thread state it saves and restores (FPU, TLS) is not done for {arch.Name} yet; memcr mode (memcr -p PID) runs here");
        string? dir = Value("images-dir");
        if (verb != "check" && dir is null)
            return Refuse(name, verb, "an images directory is required: -D DIR");
        using var log = OpenLog(dir, Value("log-file"), level);
        try
        {
            switch (verb)
            {
                case "dump":
                    NetworkLockMethod lockMethod;
                    switch (Value("network-lock") ?? "nftables")
                    {
                        case "nftables":
                            lockMethod = NetworkLockMethod.Nftables;
                            break;
                        case "skip":
                            lockMethod = NetworkLockMethod.Skip;
                            break;
                        case "iptables":
                            return Refuse(name, verb, "--network-lock iptables: memcr locks the network with nftables only; give --network-lock nftables (or skip)");
                        default:
                            return Refuse(name, verb, $"invalid --network-lock '{Value("network-lock")}': give nftables or skip");
                    }
                    if (!int.TryParse(Value("tree"), NumberStyles.None, CultureInfo.InvariantCulture, out int pid))
                        return Refuse(name, verb, Value("tree") is null ? "a process is required: -t PID" : $"invalid pid '{Value("tree")}'");
                    var result = TreeDumper.Dump(new DumpOptions
                    {
                        Pid = pid,
                        Dir = dir!,
                        ShellJob = Flag("shell-job"),
                        LeaveRunning = Flag("leave-running"),
                        TcpEstablished = Flag("tcp-established"),
                        TcpClose = Flag("tcp-close"),
                        NetworkLock = lockMethod,
                        FileLocks = Flag("file-locks"),
                        ExtUnixSk = Flag("ext-unix-sk"),
                    }, log);
                    log.Info($"dump of pid {pid} done: {result.Processes} process(es), frozen {result.Frozen.TotalMilliseconds:F1} ms");
                    return 0;
                case "restore":
                    return TreeRestorer.Restore(new RestoreOptions
                    {
                        Dir = dir!,
                        ShellJob = Flag("shell-job"),
                        Detach = Flag("restore-detached"),
                        PidFile = Value("pidfile"),
                        TcpEstablished = Flag("tcp-established"),
                        TcpClose = Flag("tcp-close"),
                        FileLocks = Flag("file-locks"),
                        ExtUnixSk = Flag("ext-unix-sk"),
                        HelperPath = Environment.ProcessPath,
                    }, log);
                default:
                    return KernelCheck.Run(Console.Out);
            }
        }
        catch (Exception e) when (e is CriuModeException or IOException or UnauthorizedAccessException)
        {
            log.Error(e.Message);
            if (level >= 4)
                Console.Error.WriteLine(e);
            return 1;
        }
    }

    private static CriuLog OpenLog(string? dir, string? file, int level)
    {
        if (file is null)
            return new CriuLog(level, Console.Error);
        string path = Path.IsPathRooted(file) || dir is null ? file : Path.Combine(dir, file);
        return new CriuLog(level, new StreamWriter(path, append: false) { AutoFlush = true }, Console.Error);
    }

    private static int Refuse(string name, string verb, string message)
    {
        Console.Error.WriteLine($"{name} {verb}: {message}");
        return 2;
    }
}
