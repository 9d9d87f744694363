using System.Globalization;

namespace Memcr.Linux.Proc;

/// <summary>Readers of /proc/PID files. Each throws a <see cref="ProcessGoneException"/> when the pid has gone.</summary>
public static class ProcFs
{
    public static string PathOf(int pid, string file) => $"/proc/{pid}/{file}";

    public static bool Exists(int pid) => Directory.Exists($"/proc/{pid}");

    public static string ReadText(int pid, string file) => Read(pid, file, File.ReadAllText);

    /// <summary>Reads /proc/PID/<paramref name="file"/> with <paramref name="read"/>, turning "no such file" into <see cref="ProcessGoneException"/>.</summary>
    private static T Read<T>(int pid, string file, Func<string, T> read)
    {
        string path = PathOf(pid, file);
        try
        {
            return read(path);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException
                                   || (e is IOException io && io.HResult == Errno.ESRCH))
        {
            throw new ProcessGoneException(pid, $"cannot read {path}: the process has gone");
        }
    }

    /// <summary>
    /// The VMAs of /proc/PID/maps (those <paramref name="keep"/> accepts, if given), read one at a
    /// time: a process can have tens of thousands.
    /// </summary>
    public static List<Vma> ReadMaps(int pid, Predicate<Vma>? keep = null)
    {
        var vmas = new List<Vma>();
        ReadMaps(pid, vma =>
        {
            if (keep is null || keep(vma))
                vmas.Add(vma);
        });
        return vmas;
    }

    /// <summary>Hands each VMA of /proc/PID/maps to <paramref name="each"/> as it is read.</summary>
    public static void ReadMaps(int pid, Action<Vma> each) => ReadVmas(pid, "maps", each);

    /// <summary>The VMAs of /proc/PID/smaps with their VmFlags.</summary>
    public static List<Vma> ReadSmaps(int pid)
    {
        var vmas = new List<Vma>();
        ReadSmaps(pid, vmas.Add);
        return vmas;
    }

    /// <summary>
    /// Hands each VMA of /proc/PID/smaps, with its VmFlags, to <paramref name="each"/> as it is
    /// read, for callers that keep less than all of them (60,000 VMAs are 80 MB of smaps text).
    /// </summary>
    public static void ReadSmaps(int pid, Action<Vma> each) => ReadVmas(pid, "smaps", each);

    private static void ReadVmas(int pid, string file, Action<Vma> each) => Read(pid, file, path =>
    {
        using var reader = MapsReader.Open(path);
        while (reader.Next(out var vma))
            each(vma);
        return true;
    });

    /// <summary>The VMAs of smaps (or maps) text.</summary>
    public static List<Vma> ParseSmaps(string text)
    {
        using var reader = new MapsReader(new MemoryStream(System.Text.Encoding.UTF8.GetBytes(text)));
        var vmas = new List<Vma>();
        while (reader.Next(out var vma))
            vmas.Add(vma);
        return vmas;
    }

    /// <summary>Thread ids of /proc/PID/task, or an empty list if the process has gone.</summary>
    public static List<int> ReadTasks(int pid)
    {
        var tids = new List<int>();
        try
        {
            foreach (var dir in Directory.EnumerateDirectories($"/proc/{pid}/task"))
            {
                if (int.TryParse(Path.GetFileName(dir), NumberStyles.None, CultureInfo.InvariantCulture, out int tid))
                    tids.Add(tid);
            }
        }
        catch (DirectoryNotFoundException)
        {
        }
        return tids;
    }

    public static ProcStatus ReadStatus(int pid) => ProcStatus.Parse(ReadText(pid, "status"));

    public static ProcStatus ReadTaskStatus(int pid, int tid) => ProcStatus.Parse(ReadText(pid, $"task/{tid}/status"));

    /// <summary>The flags field (9th) of /proc/PID/stat; PF_KTHREAD marks kernel threads.</summary>
    public static ulong ReadStatFlags(int pid)
    {
        string stat = ReadText(pid, "stat");
        // comm may hold spaces and parentheses: fields resume after the last ')'.
        int close = stat.LastIndexOf(')');
        var fields = stat[(close + 2)..].Split(' ');
        // fields[0] is state (field 3), so flags (field 9) is fields[6].
        return ulong.Parse(fields[6], CultureInfo.InvariantCulture);
    }

    /// <summary>
    /// The start time (22nd field of /proc/PID/stat, clock ticks after boot): with the pid it names
    /// one process, even after the pid is reused.
    /// </summary>
    public static ulong ReadStartTime(int pid)
    {
        string stat = ReadText(pid, "stat");
        int close = stat.LastIndexOf(')');
        var fields = stat[(close + 2)..].Split(' ');
        return ulong.Parse(fields[19], CultureInfo.InvariantCulture);
    }

    public const ulong PF_KTHREAD = 0x00200000;

    /// <summary>Children of one thread (/proc/PID/task/TID/children).</summary>
    public static List<int> ReadChildren(int pid, int tid)
    {
        var kids = new List<int>();
        string text;
        try
        {
            text = ReadText(pid, $"task/{tid}/children");
        }
        catch (ProcessGoneException)
        {
            return kids;
        }
        foreach (var word in text.Split(' ', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            kids.Add(int.Parse(word, CultureInfo.InvariantCulture));
        return kids;
    }

    /// <summary>The auxiliary vector as (type, value) words, up to and without the AT_NULL pair.</summary>
    public static List<ulong> ReadAuxv(int pid)
    {
        byte[] raw;
        try
        {
            raw = File.ReadAllBytes(PathOf(pid, "auxv"));
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new ProcessGoneException(pid, $"cannot read {PathOf(pid, "auxv")}: the process has gone");
        }
        var words = new List<ulong>();
        for (int i = 0; i + 16 <= raw.Length; i += 16)
        {
            ulong type = BitConverter.ToUInt64(raw, i);
            if (type == 0)
                break;
            words.Add(type);
            words.Add(BitConverter.ToUInt64(raw, i + 8));
        }
        return words;
    }

    /// <summary>A POSIX timer as /proc/PID/timers lists it.</summary>
    public sealed record PosixTimer(int Id, int Signal, ulong SivalPtr, string Notify, int NotifyId, int ClockId);

    public static List<PosixTimer> ReadTimers(int pid)
    {
        var timers = new List<PosixTimer>();
        int id = -1, signal = 0, clock = 0, notifyId = 0;
        ulong sival = 0;
        string notify = "";
        void Flush()
        {
            if (id >= 0)
                timers.Add(new PosixTimer(id, signal, sival, notify, notifyId, clock));
        }
        foreach (var raw in ReadText(pid, "timers").Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            string line = raw.Trim();
            if (line.StartsWith("ID:", StringComparison.Ordinal))
            {
                Flush();
                id = int.Parse(line[3..].Trim(), CultureInfo.InvariantCulture);
            }
            else if (line.StartsWith("signal:", StringComparison.Ordinal))
            {
                // "signal: 14/00007f0000000000": the signal, then sigev_value in hex.
                var parts = line[7..].Trim().Split('/');
                signal = int.Parse(parts[0], CultureInfo.InvariantCulture);
                sival = parts.Length > 1 ? ulong.Parse(parts[1], NumberStyles.HexNumber, CultureInfo.InvariantCulture) : 0;
            }
            else if (line.StartsWith("notify:", StringComparison.Ordinal))
            {
                // "notify: signal/pid.1234", "thread/tid.1235" or "none/pid.1234".
                var value = line[7..].Trim();
                int slash = value.IndexOf('/', StringComparison.Ordinal);
                int dot = value.LastIndexOf('.');
                notify = slash < 0 ? value : value[..slash];
                notifyId = dot < 0 ? 0 : int.Parse(value[(dot + 1)..], CultureInfo.InvariantCulture);
            }
            else if (line.StartsWith("ClockID:", StringComparison.Ordinal))
            {
                clock = int.Parse(line[8..].Trim(), CultureInfo.InvariantCulture);
            }
        }
        Flush();
        return timers;
    }

    /// <summary>
    /// The resource limits of a process, in RLIMIT_* order, from /proc/PID/limits (readable where
    /// prlimit(2) on another user's process would need CAP_SYS_RESOURCE).
    /// </summary>
    public static List<(ulong Current, ulong Max)> ReadLimits(int pid)
    {
        // "%-25s %-20s %-20s %-10s": name, soft, hard, units; the first line is the heading.
        static ulong Value(string s) => s == "unlimited" ? ulong.MaxValue : ulong.Parse(s, CultureInfo.InvariantCulture);
        var limits = new List<(ulong, ulong)>();
        foreach (var line in ReadText(pid, "limits").Split('\n', StringSplitOptions.RemoveEmptyEntries).Skip(1))
        {
            if (line.Length < 67)
                throw new FormatException($"/proc/{pid}/limits: unexpected line '{line}'");
            limits.Add((Value(line.Substring(26, 20).Trim()), Value(line.Substring(47, 20).Trim())));
        }
        return limits;
    }

    /// <summary>Where the file system on device <paramref name="major"/>:<paramref name="minor"/> is mounted (in pid's mount namespace).</summary>
    public static List<string> MountPoints(int pid, uint major, uint minor)
    {
        string dev = $"{major}:{minor}";
        var points = new List<string>();
        // "36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw": device third, mount point fifth.
        foreach (var line in ReadText(pid, "mountinfo").Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            var fields = line.Split(' ');
            if (fields.Length > 4 && fields[2] == dev)
                points.Add(Unescape(fields[4]));
        }
        return points;
    }

    /// <summary>mountinfo writes space, tab, newline and backslash as octal escapes (\040).</summary>
    private static string Unescape(string s)
    {
        if (!s.Contains('\\', StringComparison.Ordinal))
            return s;
        var sb = new System.Text.StringBuilder(s.Length);
        for (int i = 0; i < s.Length; i++)
        {
            if (s[i] == '\\' && i + 3 < s.Length)
            {
                sb.Append((char)Convert.ToInt32(s.Substring(i + 1, 3), 8));
                i += 3;
            }
            else
            {
                sb.Append(s[i]);
            }
        }
        return sb.ToString();
    }
}

/// <summary>The target process (or thread) no longer exists.</summary>
public sealed class ProcessGoneException : Exception
{
    public ProcessGoneException(int pid, string message) : base(message) => Pid = pid;

    public int Pid { get; }
}
