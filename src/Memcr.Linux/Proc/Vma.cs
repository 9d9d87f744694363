namespace Memcr.Linux.Proc;

[Flags]
public enum Protection
{
    None = 0,
    Read = 1,
    Write = 2,
    Exec = 4,
}

/// <summary>One line of /proc/PID/maps, plus the VmFlags from smaps when they were read.</summary>
public readonly record struct Vma(
    ulong Start,
    ulong End,
    Protection Protection,
    bool Shared,
    ulong Offset,
    ulong Inode,
    string Path,
    IReadOnlySet<string>? VmFlags = null)
{
    public ulong Length => End - Start;

    public bool IsReadable => (Protection & Protection.Read) != 0;

    public bool IsWritable => (Protection & Protection.Write) != 0;

    /// <summary>Backed by a file (path starts with '/'; "/path (deleted)" included).</summary>
    public bool IsFile => Path.Length > 0 && Path[0] == '/';

    public bool IsHeap => Path == "[heap]";

    public bool IsStack => Path.StartsWith("[stack", StringComparison.Ordinal);

    /// <summary>Anonymous: no path, or a name given with prctl(PR_SET_VMA_ANON_NAME).</summary>
    public bool IsAnonymous => Path.Length == 0 || Path.StartsWith("[anon:", StringComparison.Ordinal);

    public bool HasFlag(string flag) => VmFlags is not null && VmFlags.Contains(flag);

    public string Describe() =>
        $"{Start:x16}-{End:x16} {(IsReadable ? 'r' : '-')}{(IsWritable ? 'w' : '-')}{((Protection & Protection.Exec) != 0 ? 'x' : '-')}{(Shared ? 's' : 'p')} {Path}";

    public override string ToString() => Describe();

    /// <summary>Parses "start-end perms offset dev inode path" (one line of maps; see <see cref="MapsReader"/>).</summary>
    public static Vma ParseMapsLine(ReadOnlySpan<char> line) => MapsReader.ParseLine(System.Text.Encoding.UTF8.GetBytes(line.ToString()), names: null);
}
