using System.Globalization;

namespace Memcr.Linux.Proc;

/// <summary>
/// /proc/PID/stat (or /proc/PID/task/TID/stat): the fields a dump needs, among them the mm
/// boundaries (fields 26–28 and 45–51, shown only to a reader allowed to ptrace the process).
/// </summary>
public sealed record ProcStat
{
    public int Pid { get; init; }
    public string Comm { get; init; } = "";
    public char State { get; init; }
    public int PPid { get; init; }
    public int Pgrp { get; init; }
    public int Session { get; init; }
    public int TtyNr { get; init; }
    public uint Flags { get; init; }
    public int Nice { get; init; }
    public int Threads { get; init; }
    public ulong StartTime { get; init; }
    public ulong StartCode { get; init; }
    public ulong EndCode { get; init; }
    public ulong StartStack { get; init; }
    public int ExitSignal { get; init; }

    /// <summary>The CPU the task last ran on (field 39).</summary>
    public int Processor { get; init; }
    public uint RtPriority { get; init; }
    public uint Policy { get; init; }
    public ulong StartData { get; init; }
    public ulong EndData { get; init; }
    public ulong StartBrk { get; init; }
    public ulong ArgStart { get; init; }
    public ulong ArgEnd { get; init; }
    public ulong EnvStart { get; init; }
    public ulong EnvEnd { get; init; }
    public int ExitCode { get; init; }

    public static ProcStat Read(int pid, int? tid = null) =>
        Parse(ProcFs.ReadText(pid, tid is { } t ? $"task/{t}/stat" : "stat"));

    public static ProcStat Parse(string text)
    {
        // comm may hold spaces and parentheses: it runs from the first '(' to the last ')'.
        int open = text.IndexOf('(', StringComparison.Ordinal);
        int close = text.LastIndexOf(')');
        var f = text[(close + 2)..].TrimEnd('\n').Split(' ');
        // f[0] is field 3 (state): field N is f[N - 3].
        long L(int n) => long.Parse(f[n - 3], CultureInfo.InvariantCulture);
        ulong U(int n) => ulong.Parse(f[n - 3], CultureInfo.InvariantCulture);
        return new ProcStat
        {
            Pid = int.Parse(text[..open].Trim(), CultureInfo.InvariantCulture),
            Comm = text[(open + 1)..close],
            State = f[0][0],
            PPid = (int)L(4),
            Pgrp = (int)L(5),
            Session = (int)L(6),
            TtyNr = (int)L(7),
            Flags = (uint)U(9),
            Nice = (int)L(19),
            Threads = (int)L(20),
            StartTime = U(22),
            StartCode = U(26),
            EndCode = U(27),
            StartStack = U(28),
            ExitSignal = (int)L(38),
            Processor = (int)L(39),
            RtPriority = (uint)U(40),
            Policy = (uint)U(41),
            StartData = f.Length > 42 ? U(45) : 0,
            EndData = f.Length > 43 ? U(46) : 0,
            StartBrk = f.Length > 44 ? U(47) : 0,
            ArgStart = f.Length > 45 ? U(48) : 0,
            ArgEnd = f.Length > 46 ? U(49) : 0,
            EnvStart = f.Length > 47 ? U(50) : 0,
            EnvEnd = f.Length > 48 ? U(51) : 0,
            ExitCode = f.Length > 49 ? (int)L(52) : 0,
        };
    }
}
