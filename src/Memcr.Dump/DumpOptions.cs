namespace Memcr.Dump;

/// <summary>What `memcr dump` was asked for (CRIU's options).</summary>
public sealed record DumpOptions
{
    /// <summary>-t: the root of the tree to dump.</summary>
    public required int Pid { get; init; }

    /// <summary>-D: the image directory.</summary>
    public required string Dir { get; init; }

    /// <summary>-j: the tree belongs to a shell job: its terminal and session are the shell's.</summary>
    public bool ShellJob { get; init; }

    /// <summary>-R: the tree goes on running after the dump instead of being killed.</summary>
    public bool LeaveRunning { get; init; }

    /// <summary>--tcp-established: dump established TCP connections (in repair mode, with their queues).</summary>
    public bool TcpEstablished { get; init; }

    /// <summary>--tcp-close: record established TCP connections without their state; they are restored closed.</summary>
    public bool TcpClose { get; init; }

    /// <summary>--network-lock: how the dumped connections are kept from being reset until the restore.</summary>
    public NetworkLockMethod NetworkLock { get; init; } = NetworkLockMethod.Nftables;

    /// <summary>-l: dump file locks (without it a process holding one is refused, as by CRIU).</summary>
    public bool FileLocks { get; init; }

    /// <summary>-x: a UNIX datagram socket connected to a named socket outside the tree may be dumped (it connects to that name again at restore).</summary>
    public bool ExtUnixSk { get; init; }
}

/// <summary>What `memcr restore` was asked for.</summary>
public sealed record RestoreOptions
{
    /// <summary>-D: the image directory.</summary>
    public required string Dir { get; init; }

    /// <summary>-j: the tree is a shell job: it gets memcr's session, process group and terminal.</summary>
    public bool ShellJob { get; init; }

    /// <summary>-d: memcr exits once the tree runs, instead of waiting for its root.</summary>
    public bool Detach { get; init; }

    /// <summary>--pidfile: where to write the root's pid.</summary>
    public string? PidFile { get; init; }

    /// <summary>--tcp-established: make dumped TCP connections again (a dump holding one needs it, or --tcp-close).</summary>
    public bool TcpEstablished { get; init; }

    /// <summary>--tcp-close: make dumped TCP connections as closed sockets.</summary>
    public bool TcpClose { get; init; }

    /// <summary>-l: take the dumped file locks again (without it they are left out, as by CRIU).</summary>
    public bool FileLocks { get; init; }

    /// <summary>-x: UNIX sockets connected outside the tree are connected to their peer's name again (a dump holding one needs it).</summary>
    public bool ExtUnixSk { get; init; }

    /// <summary>The memcr binary, started as the helper whose clone3 makes the root process.</summary>
    public string? HelperPath { get; init; }
}

/// <summary>CRIU's --network-lock methods, numbered as inventory.img keeps them.</summary>
public enum NetworkLockMethod
{
    Iptables = 0,
    Nftables = 1,
    Skip = 2,
}

/// <summary>A dump or restore that could not be done; the message says what, where and why, and what became of the processes.</summary>
public sealed class CriuModeException : Exception
{
    public CriuModeException(string message) : base(message)
    {
    }

    public CriuModeException(string message, Exception inner) : base(message, inner)
    {
    }
}
