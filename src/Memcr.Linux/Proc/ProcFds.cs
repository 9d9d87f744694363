using System.Globalization;

namespace Memcr.Linux.Proc;

/// <summary>What /proc/PID/fdinfo/N says of an open file: position, open flags, mount, and the kind-specific lines.</summary>
public sealed record FdInfo(long Pos, int Flags, int MountId, IReadOnlyList<string> Lines)
{
    /// <summary>The value of "key:" (the first such line), or null.</summary>
    public string? Value(string key)
    {
        foreach (var line in Lines)
        {
            if (line.StartsWith(key, StringComparison.Ordinal) && line.Length > key.Length && line[key.Length] == ':')
                return line[(key.Length + 1)..].Trim();
        }
        return null;
    }

    /// <summary>Every line starting with <paramref name="prefix"/> (epoll's "tfd:", inotify's "inotify wd:").</summary>
    public IEnumerable<string> LinesStartingWith(string prefix) => Lines.Where(l => l.StartsWith(prefix, StringComparison.Ordinal));
}

/// <summary>A process's open file descriptors, from /proc/PID/fd and /proc/PID/fdinfo.</summary>
public static class ProcFds
{
    /// <summary>What /proc/PID/fd/FD names ("anon_inode:[userfaultfd]"), or "" when there is no such descriptor.</summary>
    public static string Link(int pid, int fd)
    {
        try
        {
            return File.ResolveLinkTarget($"/proc/{pid}/fd/{fd}", false)?.ToString() ?? "";
        }
        catch (IOException)
        {
            return "";
        }
    }

    /// <summary>Whether the process's descriptor <paramref name="fd"/> is a userfaultfd.</summary>
    public static bool IsUserFaultFd(int pid, int fd) => fd >= 0 && Link(pid, fd).Contains("[userfaultfd]", StringComparison.Ordinal);

    /// <summary>Every descriptor of the process and what its /proc link names ("/path", "pipe:[123]", "anon_inode:[eventfd]").</summary>
    public static List<(int Fd, string Link)> List(int pid)
    {
        var fds = new List<(int, string)>();
        string dir = $"/proc/{pid}/fd";
        try
        {
            foreach (var entry in Directory.EnumerateFileSystemEntries(dir))
            {
                if (!int.TryParse(Path.GetFileName(entry), NumberStyles.None, CultureInfo.InvariantCulture, out int fd))
                    continue;
                string? link = new FileInfo(entry).LinkTarget;
                if (link is not null)
                    fds.Add((fd, link));
            }
        }
        catch (DirectoryNotFoundException)
        {
            throw new ProcessGoneException(pid, $"cannot read {dir}: the process has gone");
        }
        fds.Sort((a, b) => a.Item1.CompareTo(b.Item1));
        return fds;
    }

    public static FdInfo Info(int pid, int fd)
    {
        var lines = ProcFs.ReadText(pid, $"fdinfo/{fd}").Split('\n', StringSplitOptions.RemoveEmptyEntries);
        long pos = 0;
        int flags = 0, mnt = 0;
        foreach (var line in lines)
        {
            if (line.StartsWith("pos:", StringComparison.Ordinal))
                pos = long.Parse(line[4..].Trim(), CultureInfo.InvariantCulture);
            else if (line.StartsWith("flags:", StringComparison.Ordinal))
                flags = Convert.ToInt32(line[6..].Trim(), 8);
            else if (line.StartsWith("mnt_id:", StringComparison.Ordinal))
                mnt = int.Parse(line[7..].Trim(), CultureInfo.InvariantCulture);
        }
        return new FdInfo(pos, flags, mnt, lines);
    }
}
