using System.Globalization;

namespace Memcr.Linux.Proc;

/// <summary>Fields of /proc/PID/status that we use. Sizes in kB as the kernel prints them.</summary>
public sealed record ProcStatus
{
    public string Name { get; init; } = "";
    public char State { get; init; }
    public int Tgid { get; init; }
    public int Pid { get; init; }
    public int PPid { get; init; }
    public int TracerPid { get; init; }
    public int Threads { get; init; }
    public long VmRssKb { get; init; }
    public long RssAnonKb { get; init; } = -1;
    public long RssFileKb { get; init; }
    public long RssShmemKb { get; init; }
    public ulong SigPnd { get; init; }
    public ulong ShdPnd { get; init; }
    public ulong SigBlk { get; init; }
    public ulong SigIgn { get; init; }
    public ulong SigCgt { get; init; }
    public bool KernelThread { get; init; }

    /// <summary>Real, effective, saved and filesystem ids.</summary>
    public uint[] Uid { get; init; } = [];
    public uint[] Gid { get; init; } = [];
    public uint[] Groups { get; init; } = [];
    public ulong CapInh { get; init; }
    public ulong CapPrm { get; init; }
    public ulong CapEff { get; init; }
    public ulong CapBnd { get; init; }
    public ulong CapAmb { get; init; }
    public uint NoNewPrivs { get; init; }

    /// <summary>SECCOMP_MODE_*: 0 disabled, 1 strict, 2 filter.</summary>
    public int Seccomp { get; init; }

    /// <summary>Seccomp filters attached (Seccomp_filters:, Linux 5.9+).</summary>
    public int SeccompFilters { get; init; }

    public uint Umask { get; init; }

    public static ProcStatus Parse(string text)
    {
        var s = new ProcStatus();
        foreach (var line in text.AsSpan().EnumerateLines())
        {
            int colon = line.IndexOf(':');
            if (colon <= 0)
                continue;
            var key = line[..colon];
            var value = line[(colon + 1)..].Trim();
            s = key switch
            {
                "Name" => s with { Name = value.ToString() },
                "State" => s with { State = value.IsEmpty ? '?' : value[0] },
                "Tgid" => s with { Tgid = Int(value) },
                "Pid" => s with { Pid = Int(value) },
                "PPid" => s with { PPid = Int(value) },
                "TracerPid" => s with { TracerPid = Int(value) },
                "Threads" => s with { Threads = Int(value) },
                "VmRSS" => s with { VmRssKb = Kb(value) },
                "RssAnon" => s with { RssAnonKb = Kb(value) },
                "RssFile" => s with { RssFileKb = Kb(value) },
                "RssShmem" => s with { RssShmemKb = Kb(value) },
                "SigPnd" => s with { SigPnd = Hex(value) },
                "ShdPnd" => s with { ShdPnd = Hex(value) },
                "SigBlk" => s with { SigBlk = Hex(value) },
                "SigIgn" => s with { SigIgn = Hex(value) },
                "SigCgt" => s with { SigCgt = Hex(value) },
                "Kthread" => s with { KernelThread = Int(value) != 0 },
                "Uid" => s with { Uid = Ids(value) },
                "Gid" => s with { Gid = Ids(value) },
                "Groups" => s with { Groups = Ids(value) },
                "CapInh" => s with { CapInh = Hex(value) },
                "CapPrm" => s with { CapPrm = Hex(value) },
                "CapEff" => s with { CapEff = Hex(value) },
                "CapBnd" => s with { CapBnd = Hex(value) },
                "CapAmb" => s with { CapAmb = Hex(value) },
                "NoNewPrivs" => s with { NoNewPrivs = (uint)Int(value) },
                "Seccomp" => s with { Seccomp = Int(value) },
                "Seccomp_filters" => s with { SeccompFilters = Int(value) },
                "Umask" => s with { Umask = Convert.ToUInt32(value.ToString(), 8) },
                _ => s,
            };
        }
        return s;
    }

    private static uint[] Ids(ReadOnlySpan<char> v) =>
        v.ToString().Split((char[])[' ', '\t'], StringSplitOptions.RemoveEmptyEntries).Select(x => uint.Parse(x, CultureInfo.InvariantCulture)).ToArray();

    private static int Int(ReadOnlySpan<char> v) => int.Parse(v, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture);

    private static long Kb(ReadOnlySpan<char> v)
    {
        int sp = v.IndexOf(' ');
        return long.Parse(sp < 0 ? v : v[..sp], NumberStyles.None, CultureInfo.InvariantCulture);
    }

    private static ulong Hex(ReadOnlySpan<char> v) => ulong.Parse(v, NumberStyles.HexNumber, CultureInfo.InvariantCulture);
}
