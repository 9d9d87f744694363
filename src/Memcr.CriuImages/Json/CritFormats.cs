using System.Globalization;
using System.Net;
using System.Numerics;
using System.Text;

namespace Memcr.CriuImages.Json;

/// <summary>
/// How crit shows numbers and bytes: flag tables, value tables, dev_t, hex, IP addresses,
/// base64 with Python's line breaks, quoted-printable unix socket names. The tables are CRIU's
/// (lib/pycriu/images/pb2dict.py); a field names its table in its (criu) option.
/// </summary>
internal static class CritFormats
{
    private static readonly (string Name, ulong Bit)[] MmapProt = [("PROT_READ", 0x1), ("PROT_WRITE", 0x2), ("PROT_EXEC", 0x4)];

    private static readonly (string Name, ulong Bit)[] MmapFlags =
        [("MAP_SHARED", 0x1), ("MAP_PRIVATE", 0x2), ("MAP_DROPPABLE", 0x08), ("MAP_ANON", 0x20), ("MAP_GROWSDOWN", 0x0100)];

    private static readonly (string Name, ulong Bit)[] MmapStatus =
    [
        ("VMA_AREA_NONE", 0), ("VMA_AREA_REGULAR", 1 << 0), ("VMA_AREA_STACK", 1 << 1), ("VMA_AREA_VSYSCALL", 1 << 2),
        ("VMA_AREA_VDSO", 1 << 3), ("VMA_AREA_HEAP", 1 << 5), ("VMA_FILE_PRIVATE", 1 << 6), ("VMA_FILE_SHARED", 1 << 7),
        ("VMA_ANON_SHARED", 1 << 8), ("VMA_ANON_PRIVATE", 1 << 9), ("VMA_AREA_SYSVIPC", 1 << 10), ("VMA_AREA_SOCKET", 1 << 11),
        ("VMA_AREA_VVAR", 1 << 12), ("VMA_AREA_AIORING", 1 << 13), ("VMA_AREA_MEMFD", 1 << 14), ("VMA_AREA_SHSTK", 1 << 15),
        ("VMA_AREA_UPROBES", 1 << 17), ("VMA_UNSUPP", 1UL << 31),
    ];

    private static readonly (string Name, ulong Bit)[] OpenFlags =
    [
        ("O_WRONLY", 0x1), ("O_RDWR", 0x2), ("O_CREAT", 0x40), ("O_EXCL", 0x80), ("O_NOCTTY", 0x100), ("O_TRUNC", 0x200),
        ("O_APPEND", 0x400), ("O_NONBLOCK", 0x800), ("O_DSYNC", 0x1000), ("FASYNC", 0x2000), ("O_DIRECT", 0x4000),
        ("O_LARGEFILE", 0x8000), ("O_DIRECTORY", 0x10000), ("O_NOFOLLOW", 0x20000), ("O_NOATIME", 0x40000), ("O_CLOEXEC", 0x80000),
    ];

    private static readonly (string Name, ulong Bit)[] Seals =
        [("F_SEAL_SEAL", 0x1), ("F_SEAL_SHRINK", 0x2), ("F_SEAL_GROW", 0x4), ("F_SEAL_WRITE", 0x8), ("F_SEAL_FUTURE_WRITE", 0x10)];

    private static readonly (string Name, ulong Bit)[] PagemapFlags = [("PE_PARENT", 1), ("PE_LAZY", 2), ("PE_PRESENT", 4)];

    private static readonly Dictionary<string, (string Name, ulong Bit)[]> FlagTables = new(StringComparer.Ordinal)
    {
        ["mmap.prot"] = MmapProt,
        ["mmap.flags"] = MmapFlags,
        ["mmap.status"] = MmapStatus,
        ["rfile.flags"] = OpenFlags,
        ["pmap.flags"] = PagemapFlags,
        ["seals.flags"] = Seals,
    };

    /// <summary>Value tables by table name, then by field name.</summary>
    private static readonly Dictionary<string, Dictionary<string, Dictionary<long, string>>> ValueTables = new(StringComparer.Ordinal)
    {
        ["gen"] = new(StringComparer.Ordinal)
        {
            ["task_state"] = new() { [1] = "Alive", [3] = "Zombie", [6] = "Stopped" },
        },
        ["sk"] = new(StringComparer.Ordinal)
        {
            ["family"] = new() { [1] = "UNIX", [2] = "INET", [10] = "INET6", [16] = "NETLINK", [17] = "PACKET" },
            ["type"] = new() { [1] = "STREAM", [2] = "DGRAM", [3] = "RAW", [5] = "SEQPACKET", [10] = "PACKET" },
            ["state"] = new()
            {
                [1] = "ESTABLISHED", [2] = "SYN_SENT", [3] = "SYN_RECV", [4] = "FIN_WAIT1", [5] = "FIN_WAIT2", [6] = "TIME_WAIT",
                [7] = "CLOSE", [8] = "CLOSE_WAIT", [9] = "LAST_ACK", [10] = "LISTEN",
            },
            ["proto"] = new() { [0] = "IP", [6] = "TCP", [17] = "UDP", [136] = "UDPLITE" },
        },
    };

    /// <summary>Python's "0x%x": negative values come out as "0x-5".</summary>
    public static string Hex(BigInteger v) => v < 0 ? "0x-" + ToHex(-v) : "0x" + ToHex(v);

    private static string ToHex(BigInteger v) => v.IsZero ? "0" : v.ToString("x", CultureInfo.InvariantCulture).TrimStart('0');

    /// <summary>"A | B | 0x40": the names of the table's bits that are set, then what is left in hex.</summary>
    public static string? Flags(string table, BigInteger value)
    {
        if (!FlagTables.TryGetValue(table, out var bits))
            return null;
        var names = new List<string>();
        BigInteger all = 0;
        foreach (var (name, bit) in bits)
        {
            if ((value & bit) != 0)
                names.Add(name);
            all |= bit;
        }
        var rest = value & ~all;
        if (rest != 0)
            names.Add(Hex(rest));
        return string.Join(" | ", names);
    }

    /// <summary>The flag value of "A | B | 0x40"; null with the reason when a name is unknown.</summary>
    public static BigInteger? UnFlags(string table, string text, out string? problem)
    {
        problem = null;
        if (text.Length == 0)
            return 0;
        var bits = FlagTables.GetValueOrDefault(table) ?? [];
        BigInteger value = 0;
        foreach (var part in text.Split('|'))
        {
            string name = part.Trim();
            int at = Array.FindIndex(bits, b => b.Name == name);
            if (at >= 0)
            {
                value += bits[at].Bit;
                continue;
            }
            if (ParsePythonInt(name) is not { } n)
            {
                problem = $"'{name}' is not a flag of {table} ({string.Join(", ", bits.Select(b => b.Name))}) nor a number";
                return null;
            }
            value += n;
        }
        return value;
    }

    public static bool HasFlagTable(string table) => FlagTables.ContainsKey(table);

    /// <summary>A value's name in a value table, or null (then crit prints the number).</summary>
    public static string? ValueName(string table, string field, BigInteger value) =>
        ValueTables.TryGetValue(table, out var fields) && fields.TryGetValue(field, out var names) && value >= long.MinValue && value <= long.MaxValue
            ? names.GetValueOrDefault((long)value)
            : null;

    public static BigInteger? ValueOf(string table, string field, string name)
    {
        if (ValueTables.TryGetValue(table, out var fields) && fields.TryGetValue(field, out var names))
        {
            foreach (var (k, v) in names)
            {
                if (v == name)
                    return k;
            }
        }
        return null;
    }

    // dev_t: the kernel's encoding keeps 20 minor bits; the old one is glibc's major()/minor().
    public static string Dev(ulong value, bool old) => old
        ? $"{((value >> 8) & 0xfff) | ((value >> 32) & ~0xfffUL)}:{(value & 0xff) | ((value >> 12) & ~0xffUL)}"
        : $"{value >> 20}:{value & ((1 << 20) - 1)}";

    public static BigInteger? UnDev(string text, bool old)
    {
        var parts = text.Split(':');
        if (parts.Length != 2 || !ulong.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out ulong major)
            || !ulong.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out ulong minor))
            return null;
        return old
            ? (BigInteger)((minor & 0xff) | ((major & 0xfff) << 8) | ((minor & ~0xffUL) << 12) | ((major & ~0xfffUL) << 32))
            : ((BigInteger)major << 20) | minor;
    }

    /// <summary>
    /// An address kept as uint32 words in network byte order: one word is IPv4, four are IPv6.
    /// IPv6 is written the way Python's ipaddress does (RFC 5952, IPv4-mapped ones in hex too).
    /// </summary>
    public static string? Address(IReadOnlyList<ulong> words)
    {
        if (words.Count == 0 || words.Count is 2 or 3)
            return null;
        var bytes = new byte[words.Count == 1 ? 4 : 16];
        for (int i = 0; i < bytes.Length / 4; i++)
            BitConverter.TryWriteBytes(bytes.AsSpan(i * 4), (uint)words[i]);
        if (bytes.Length == 4)
            return new IPAddress(bytes).ToString();
        var hextets = Enumerable.Range(0, 8).Select(i => (bytes[2 * i] << 8) | bytes[2 * i + 1]).ToArray();
        int bestStart = -1, bestLen = 0;
        for (int i = 0; i < 8;)
        {
            if (hextets[i] != 0)
            {
                i++;
                continue;
            }
            int j = i;
            while (j < 8 && hextets[j] == 0)
                j++;
            if (j - i > bestLen)
                (bestStart, bestLen) = (i, j - i);
            i = j;
        }
        string Part(int from, int to) => string.Join(':', hextets[from..to].Select(h => h.ToString("x", CultureInfo.InvariantCulture)));
        return bestLen > 1 ? Part(0, bestStart) + "::" + Part(bestStart + bestLen, 8) : Part(0, 8);
    }

    /// <summary>The words of an address written as text; null if it is not an address.</summary>
    public static List<ulong>? UnAddress(string text)
    {
        if (!IPAddress.TryParse(text, out var address))
            return null;
        var bytes = address.GetAddressBytes();
        var words = new List<ulong>();
        for (int i = 0; i < bytes.Length; i += 4)
            words.Add(BitConverter.ToUInt32(bytes, i));
        return words;
    }

    /// <summary>Python's base64.encodebytes: lines of 76 characters, each ending in a new line.</summary>
    public static string Base64Lines(ReadOnlySpan<byte> data)
    {
        if (data.IsEmpty)
            return "";
        string all = Convert.ToBase64String(data);
        var b = new StringBuilder(all.Length + all.Length / 76 + 1);
        for (int i = 0; i < all.Length; i += 76)
            b.Append(all, i, Math.Min(76, all.Length - i)).Append('\n');
        return b.ToString();
    }

    /// <summary>Python's base64.decodebytes: characters outside the alphabet (new lines) are skipped.</summary>
    public static byte[]? FromBase64(string text)
    {
        var clean = new StringBuilder(text.Length);
        foreach (char c in text)
        {
            if (char.IsAsciiLetterOrDigit(c) || c is '+' or '/' or '=')
                clean.Append(c);
        }
        try
        {
            return Convert.FromBase64String(clean.ToString());
        }
        catch (FormatException)
        {
            return null;
        }
    }

    /// <summary>
    /// Python's int(text, 0): decimal, 0x/0o/0b prefixes, a sign, underscores between digits,
    /// surrounding blanks; no leading zeros on a decimal.
    /// </summary>
    public static BigInteger? ParsePythonInt(string text)
    {
        string s = text.Trim();
        bool negative = false;
        if (s.Length > 0 && s[0] is '+' or '-')
        {
            negative = s[0] == '-';
            s = s[1..];
        }
        int radix = 10;
        if (s.Length > 1 && s[0] == '0' && char.ToLowerInvariant(s[1]) is 'x' or 'o' or 'b')
        {
            radix = char.ToLowerInvariant(s[1]) switch { 'x' => 16, 'o' => 8, _ => 2 };
            s = s[2..];
            if (s.StartsWith('_'))
                s = s[1..];
        }
        if (s.Length == 0 || s.StartsWith('_') || s.EndsWith('_') || s.Contains("__", StringComparison.Ordinal))
            return null;
        s = s.Replace("_", "", StringComparison.Ordinal);
        if (radix == 10 && s.Length > 1 && s[0] == '0' && s.Any(c => c != '0'))
            return null;
        BigInteger value = 0;
        foreach (char c in s)
        {
            int digit = c switch
            {
                >= '0' and <= '9' => c - '0',
                >= 'a' and <= 'z' => c - 'a' + 10,
                >= 'A' and <= 'Z' => c - 'A' + 10,
                _ => 99,
            };
            if (digit >= radix)
                return null;
            value = value * radix + digit;
        }
        return negative ? -value : value;
    }

    /// <summary>crit's size for --nopl payloads: "15B", "1.5KB".</summary>
    public static string HumanSize(double n)
    {
        foreach (string unit in new[] { "", "K", "M", "G", "T", "P", "E", "Z" })
        {
            if (n < 1024.0)
                return n == Math.Floor(n) ? $"{(long)n}{unit}B" : $"{n.ToString("F1", CultureInfo.InvariantCulture)}{unit}B";
            n /= 1024.0;
        }
        return $"{n.ToString("F1", CultureInfo.InvariantCulture)}YB";
    }
}
