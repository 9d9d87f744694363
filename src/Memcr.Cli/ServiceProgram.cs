using System.Net;
using System.Runtime.InteropServices;
using Memcr.Cli;
using Memcr.Engine;
using Memcr.Image;
using Memcr.Service;

/// <summary>memcr -l PORT|PATH: the service, until SIGTERM or SIGINT.</summary>
internal static class ServiceProgram
{
    public static int Run(MemcrArguments a, byte[]? key, Log log)
    {
        IPAddress address = IPAddress.Loopback;
        if (a.ListenAddress is not null && !IPAddress.TryParse(a.ListenAddress, out address!))
        {
            log.Error($"--listen-address {a.ListenAddress}: not an IP address");
            return 1;
        }
        bool persistentKey = key is not null;
        // The images an incremental service keeps must be readable by its later checkpoints:
        // without a key file, one random key for the service's life (it dies with the service).
        if (key is null && a.Incremental && a.Encryption != Encryption.None)
            key = System.Security.Cryptography.RandomNumberGenerator.GetBytes(ImageCipher.KeyLength(a.Encryption));
        var options = new ServiceOptions
        {
            Listen = a.Listen!,
            ListenAddress = address,
            SocketGroup = a.ListenGid,
            Timeout = a.Timeout,
            PersistentKey = persistentKey,
            Version = MemcrProgram.VersionText,
            Checkpoint = a.ToCheckpointOptions(0, key) with { DumpDir = Path.GetFullPath(a.DumpDir) },
        };
        using var service = new MemcrService(options, log);
        try
        {
            service.Start();
        }
        catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException or CheckpointException
                                   or UnauthorizedAccessException or Memcr.Linux.SyscallException or ArgumentException)
        {
            log.Error($"cannot start the service on {a.Listen}: {e.Message}");
            return 1;
        }
        void OnSignal(PosixSignalContext context)
        {
            context.Cancel = true;
            log.Info($"{context.Signal}: stopping (no new checkpoints; held processes are restored)");
            service.Stop();
        }
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);
        service.RunAsync().GetAwaiter().GetResult();
        return 0;
    }
}
