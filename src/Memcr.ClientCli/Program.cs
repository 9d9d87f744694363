using System.Globalization;
using System.Net.Sockets;
using System.Reflection;
using Memcr.Cli;
using Memcr.Client;

return ClientProgram.Run(args);

/// <summary>memcr-client: the original's options, output lines and exit codes, plus --status.</summary>
internal static class ClientProgram
{
    private const string Usage = """
        memcr-client -l PORT|PATH -p PID [-c -r] [-V]
        memcr-client -l PORT|PATH -p PID --forget
        memcr-client -l PORT|PATH --status
        options:
          -h --help         help
          -l --location     TCP port number of localhost memcr service
                             or filesystem path to memcr service UNIX socket
          -p --pid          process ID to be checkpointed / restored
          -c --checkpoint   send checkpoint command to memcr service
          -r --restore      send restore command to memcr service
          -s --status       print which processes the service holds (JSON)
          -F --forget       the process is back for good: end the tracking of its writes
                             (memcr --incremental) and remove its kept images
          -V --version      print version and exit
        exit status: the service's answer (0 OK, 255 error, 254 invalid pid)
        """;

    private static readonly IReadOnlyList<OptionSpec> Specs =
    [
        new('h', "help", ArgumentKind.None),
        new('l', "location", ArgumentKind.Required),
        new('p', "pid", ArgumentKind.Required),
        new('c', "checkpoint", ArgumentKind.None),
        new('r', "restore", ArgumentKind.None),
        new('s', "status", ArgumentKind.None),
        new('F', "forget", ArgumentKind.None),
        new('V', "version", ArgumentKind.None),
    ];

    public static int Run(string[] args)
    {
        List<ParsedOption> options;
        try
        {
            (options, _) = GetOpt.Parse(args, Specs);
        }
        catch (GetOptException e)
        {
            Console.Error.WriteLine($"memcr-client: {e.Message}");
            Console.Error.WriteLine(Usage);
            return 1;
        }
        bool Has(string name) => options.Any(o => o.Spec.Long == name);
        string? Value(string name) => options.LastOrDefault(o => o.Spec.Long == name).Value;
        if (Has("help"))
        {
            Console.Out.WriteLine(Usage);
            return 0;
        }
        if (Has("version"))
        {
            string version = typeof(ClientProgram).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion.Split('+')[0] ?? "?";
            Console.Out.WriteLine($"[i] memcr-client version {version}");
            return 0;
        }
        string? location = Value("location");
        // As the original (atoi): a pid that is not a number is 0, which is refused.
        int pid = int.TryParse(Value("pid"), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int p) ? p : 0;
        bool status = Has("status");
        if (location is null || (pid == 0 && !status))
        {
            Console.Error.WriteLine("Incorrect arguments provided!");
            Console.Error.WriteLine(Usage);
            return 1;
        }
        bool checkpoint = Has("checkpoint"), restore = Has("restore"), forget = Has("forget");
        if (!checkpoint && !restore && !status && !forget)
        {
            Console.Error.WriteLine("You have to provide a command (checkpoint or restore or both)!");
            Console.Error.WriteLine(Usage);
            return 1;
        }
        try
        {
            return Send(location, pid, checkpoint, restore, status, forget).GetAwaiter().GetResult();
        }
        catch (Exception e) when (e is SocketException or IOException or ArgumentException)
        {
            Console.Error.WriteLine($"{e.Message}");
            Console.Error.WriteLine("Connection creation failed!");
            return -1;
        }
    }

    private static async Task<int> Send(string location, int pid, bool checkpoint, bool restore, bool status, bool forget)
    {
        await using var connection = await MemcrConnection.OpenAsync(MemcrProtocol.ParseLocation(location)).ConfigureAwait(false);
        int ret = 0;
        if (status)
        {
            Console.Out.WriteLine(await connection.StatusJsonAsync().ConfigureAwait(false));
            if (!checkpoint && !restore && !forget)
                return 0;
        }
        if (checkpoint)
        {
            Console.Out.WriteLine($"Will checkpoint {pid}.");
            ret = (int)await connection.SendAsync(MemcrCommand.Checkpoint, pid).ConfigureAwait(false);
            Console.Out.WriteLine($"Procedure finished with {(ret == 0 ? "OK" : "ERROR")} status.");
        }
        if (restore)
        {
            Console.Out.WriteLine($"Will restore {pid}.");
            ret = (int)await connection.SendAsync(MemcrCommand.Restore, pid).ConfigureAwait(false);
            Console.Out.WriteLine($"Procedure finished with {(ret == 0 ? "OK" : "ERROR")} status.");
        }
        if (forget)
        {
            Console.Out.WriteLine($"Will forget {pid}.");
            ret = (int)await connection.SendAsync(MemcrCommand.Forget, pid).ConfigureAwait(false);
            Console.Out.WriteLine($"Procedure finished with {(ret == 0 ? "OK" : "ERROR")} status.");
        }
        Console.Out.WriteLine("Command executed, exiting.");
        return ret;
    }
}
