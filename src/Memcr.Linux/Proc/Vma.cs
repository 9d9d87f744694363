using System.Globalization;

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

    /// <summary>Parses "start-end perms offset dev inode path".</summary>
    public static Vma ParseMapsLine(ReadOnlySpan<char> line)
    {
        int dash = line.IndexOf('-');
        int sp1 = line.IndexOf(' ');
        if (dash <= 0 || sp1 <= dash)
            throw new FormatException($"malformed maps line '{line}'");
        ulong start = ulong.Parse(line[..dash], NumberStyles.HexNumber, CultureInfo.InvariantCulture);
        ulong end = ulong.Parse(line[(dash + 1)..sp1], NumberStyles.HexNumber, CultureInfo.InvariantCulture);
        var rest = line[(sp1 + 1)..];
        if (rest.Length < 4)
            throw new FormatException($"malformed maps line '{line}'");
        var prot = Protection.None;
        if (rest[0] == 'r') prot |= Protection.Read;
        if (rest[1] == 'w') prot |= Protection.Write;
        if (rest[2] == 'x') prot |= Protection.Exec;
        bool shared = rest[3] == 's';
        rest = rest[4..].TrimStart(' ');
        int sp = rest.IndexOf(' ');
        ulong offset = ulong.Parse(rest[..sp], NumberStyles.HexNumber, CultureInfo.InvariantCulture);
        rest = rest[(sp + 1)..].TrimStart(' ');
        sp = rest.IndexOf(' ');
        rest = rest[(sp + 1)..].TrimStart(' '); // device
        sp = rest.IndexOf(' ');
        var inodeText = sp < 0 ? rest : rest[..sp];
        ulong inode = ulong.Parse(inodeText, NumberStyles.None, CultureInfo.InvariantCulture);
        string path = sp < 0 ? string.Empty : rest[(sp + 1)..].Trim(' ').ToString();
        return new Vma(start, end, prot, shared, offset, inode, path);
    }
}
