using System.Globalization;
using System.Text;
using Memcr.Linux.Proc;

namespace Memcr.Engine.Incremental;

/// <summary>
/// What lets the next checkpoint of a restored process save only what it wrote: the process
/// (pid and start time, so that a reused pid is told apart), the image kept for it (the newest
/// of its chain) and the process's own descriptor of the userfaultfd that tracks its writes.
/// Kept next to the images as <c>pages-PID.track</c>, a few lines of text.
/// </summary>
internal sealed record TrackState(int Pid, ulong StartTime, ulong ImageId, int Fd)
{
    private const string Magic = "memcr write tracking 1";

    public static string PathFor(string dumpDir, int pid) => Path.Combine(dumpDir, $"pages-{pid}.track");

    /// <summary>Writes it (to a new file renamed over the old one, then synced), so that it is whole or absent.</summary>
    public void Write(string dumpDir)
    {
        string path = PathFor(dumpDir, Pid), temp = path + ".new";
        string text = string.Create(CultureInfo.InvariantCulture, $"{Magic}\npid {Pid}\nstart_time {StartTime}\nimage {ImageId:x16}\nfd {Fd}\n");
        using (var file = new FileStream(temp, new FileStreamOptions
        {
            Mode = FileMode.Create,
            Access = FileAccess.Write,
            UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite,
        }))
        {
            file.Write(Encoding.ASCII.GetBytes(text));
            file.Flush(flushToDisk: true);
        }
        File.Move(temp, path, overwrite: true);
    }

    /// <summary>The state kept for <paramref name="pid"/>, or null when there is none; throws <see cref="InvalidDataException"/> for one that cannot be read.</summary>
    public static TrackState? Read(string dumpDir, int pid)
    {
        string path = PathFor(dumpDir, pid);
        string[] lines;
        try
        {
            lines = File.ReadAllLines(path);
        }
        catch (FileNotFoundException)
        {
            return null;
        }
        var values = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var line in lines.Skip(1))
        {
            int space = line.IndexOf(' ', StringComparison.Ordinal);
            if (space > 0)
                values[line[..space]] = line[(space + 1)..];
        }
        if (lines.Length == 0 || lines[0] != Magic
            || !values.TryGetValue("pid", out var p) || !int.TryParse(p, NumberStyles.None, CultureInfo.InvariantCulture, out int readPid) || readPid != pid
            || !values.TryGetValue("start_time", out var st) || !ulong.TryParse(st, NumberStyles.None, CultureInfo.InvariantCulture, out ulong start)
            || !values.TryGetValue("image", out var im) || !ulong.TryParse(im, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out ulong image)
            || !values.TryGetValue("fd", out var f) || !int.TryParse(f, NumberStyles.None, CultureInfo.InvariantCulture, out int fd))
        {
            throw new InvalidDataException($"{path} is not a write-tracking state of pid {pid}");
        }
        return new TrackState(pid, start, image, fd);
    }

    public static void Delete(string dumpDir, int pid, Action<string> error)
    {
        try
        {
            File.Delete(PathFor(dumpDir, pid));
        }
        catch (IOException e)
        {
            error($"cannot remove {PathFor(dumpDir, pid)}: {e.Message}");
        }
    }

    /// <summary>The pids with a state in <paramref name="dumpDir"/>.</summary>
    public static IEnumerable<int> Pids(string dumpDir)
    {
        IEnumerable<string> files;
        try
        {
            files = Directory.EnumerateFiles(dumpDir, "pages-*.track").ToList();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            yield break;
        }
        foreach (var file in files)
        {
            string name = Path.GetFileName(file);
            if (int.TryParse(name.AsSpan(6, name.Length - 12), NumberStyles.None, CultureInfo.InvariantCulture, out int pid))
                yield return pid;
        }
    }

    /// <summary>Whether it is of the process now running as <see cref="Pid"/> (not of one that has gone, its pid since reused).</summary>
    public bool IsOfLiveProcess()
    {
        try
        {
            return ProcFs.ReadStartTime(Pid) == StartTime;
        }
        catch (ProcessGoneException)
        {
            return false;
        }
    }
}
