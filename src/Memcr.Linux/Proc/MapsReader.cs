using System.Buffers;
using System.Globalization;
using System.Text;

namespace Memcr.Linux.Proc;

/// <summary>
/// Reads the VMAs of /proc/PID/maps or /proc/PID/smaps one at a time, parsing their bytes in
/// place: a process can have tens of thousands of VMAs (80 MB of smaps text for 60,000), and a
/// string for each line would be garbage in proportion. Paths and VmFlags sets that repeat are
/// shared between the VMAs that have them.
/// </summary>
public sealed class MapsReader : IDisposable
{
    private static readonly SearchValues<byte> HexDigits = SearchValues.Create("0123456789abcdefABCDEF"u8);

    private readonly Stream _stream;
    private byte[] _buffer = new byte[64 << 10];
    private int _start, _end;
    private bool _eof;
    private char[] _chars = new char[256];
    private readonly Dictionary<string, string> _paths = new(StringComparer.Ordinal);
    private readonly Dictionary<string, IReadOnlySet<string>> _flagSets = new(StringComparer.Ordinal);
    private Vma? _pending;
    private long _pendingAnonymous;

    public MapsReader(Stream stream) => _stream = stream;

    /// <summary>Opens a maps or smaps file (throws what opening it throws).</summary>
    public static MapsReader Open(string path) =>
        new(new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, bufferSize: 0));

    /// <summary>smaps' "Anonymous:" of the VMA <see cref="Next"/> gave last, in kB (0 for maps).</summary>
    public long AnonymousKb { get; private set; }

    /// <summary>The next VMA in address order, with its VmFlags when the text is smaps.</summary>
    public bool Next(out Vma vma)
    {
        while (ReadLine(out var line))
        {
            if (line.IsEmpty)
                continue;
            if (IsMappingLine(line))
            {
                var parsed = ParseLine(line, this);
                bool had = _pending is not null;
                vma = _pending.GetValueOrDefault();
                AnonymousKb = _pendingAnonymous;
                (_pending, _pendingAnonymous) = (parsed, 0);
                if (had)
                    return true;
                continue;
            }
            if (_pending is not { } current)
                throw new FormatException($"smaps: '{Encoding.UTF8.GetString(line)}' before the first mapping");
            if (line.StartsWith("VmFlags:"u8))
                _pending = current with { VmFlags = FlagSet(line["VmFlags:".Length..]) };
            else if (line.StartsWith("Anonymous:"u8))
                _pendingAnonymous = ParseKb(line["Anonymous:".Length..]);
        }
        AnonymousKb = _pendingAnonymous;
        vma = _pending.GetValueOrDefault();
        bool last = _pending is not null;
        _pending = null;
        return last;
    }

    /// <summary>
    /// Whether a line starts a mapping (a hex address followed by '-') rather than giving one of
    /// its attributes ("Name: value"; "Anonymous:" starts with a hex digit).
    /// </summary>
    internal static bool IsMappingLine(ReadOnlySpan<byte> line)
    {
        int dash = line.IndexOf((byte)'-');
        if (dash <= 0)
            return false;
        int colon = line.IndexOf((byte)':');
        return (colon < 0 || dash < colon) && line[..dash].IndexOfAnyExcept(HexDigits) < 0;
    }

    /// <summary>Parses "start-end perms offset dev inode path"; <paramref name="names"/> shares repeated paths.</summary>
    internal static Vma ParseLine(ReadOnlySpan<byte> line, MapsReader? names)
    {
        int dash = line.IndexOf((byte)'-');
        int sp1 = line.IndexOf((byte)' ');
        if (dash <= 0 || sp1 <= dash)
            throw Malformed(line);
        ulong start = Hex(line[..dash], line);
        ulong end = Hex(line[(dash + 1)..sp1], line);
        var rest = line[(sp1 + 1)..];
        if (rest.Length < 4)
            throw Malformed(line);
        var prot = Protection.None;
        if (rest[0] == 'r') prot |= Protection.Read;
        if (rest[1] == 'w') prot |= Protection.Write;
        if (rest[2] == 'x') prot |= Protection.Exec;
        bool shared = rest[3] == 's';
        rest = rest[4..].TrimStart((byte)' ');
        ulong offset = Hex(Field(ref rest, line), line);
        Field(ref rest, line); // device
        var inodeText = Field(ref rest, line);
        if (!ulong.TryParse(inodeText, NumberStyles.None, CultureInfo.InvariantCulture, out ulong inode))
            throw Malformed(line);
        var pathBytes = rest.Trim((byte)' ');
        string path = pathBytes.IsEmpty ? string.Empty : names is null ? Encoding.UTF8.GetString(pathBytes) : names.Path(pathBytes);
        return new Vma(start, end, prot, shared, offset, inode, path);
    }

    /// <summary>The next space-separated field of <paramref name="rest"/>, which moves past it.</summary>
    private static ReadOnlySpan<byte> Field(ref ReadOnlySpan<byte> rest, ReadOnlySpan<byte> line)
    {
        if (rest.IsEmpty)
            throw Malformed(line);
        int sp = rest.IndexOf((byte)' ');
        var field = sp < 0 ? rest : rest[..sp];
        rest = sp < 0 ? [] : rest[(sp + 1)..].TrimStart((byte)' ');
        return field;
    }

    private static ulong Hex(ReadOnlySpan<byte> text, ReadOnlySpan<byte> line) =>
        ulong.TryParse(text, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out ulong value) ? value : throw Malformed(line);

    private static FormatException Malformed(ReadOnlySpan<byte> line) => new($"malformed maps line '{Encoding.UTF8.GetString(line)}'");

    private static long ParseKb(ReadOnlySpan<byte> value)
    {
        value = value.Trim((byte)' ');
        if (value.EndsWith(" kB"u8))
            value = value[..^3].TrimEnd((byte)' ');
        return long.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out long kb) ? kb : 0;
    }

    private string Path(ReadOnlySpan<byte> utf8)
    {
        var chars = Decode(utf8);
        var lookup = _paths.GetAlternateLookup<ReadOnlySpan<char>>();
        if (!lookup.TryGetValue(chars, out var path))
        {
            path = chars.ToString();
            _paths.Add(path, path);
        }
        return path;
    }

    /// <summary>The set of flags of a VmFlags line ("rd wr mr mw me ac"), one set for each distinct line.</summary>
    private IReadOnlySet<string> FlagSet(ReadOnlySpan<byte> utf8)
    {
        var text = Decode(utf8.Trim((byte)' '));
        var lookup = _flagSets.GetAlternateLookup<ReadOnlySpan<char>>();
        if (!lookup.TryGetValue(text, out var set))
        {
            var flags = new HashSet<string>(StringComparer.Ordinal);
            foreach (var range in text.Split(' '))
            {
                if (!text[range].IsEmpty)
                    flags.Add(text[range].ToString());
            }
            set = flags;
            _flagSets.Add(text.ToString(), set);
        }
        return set;
    }

    private ReadOnlySpan<char> Decode(ReadOnlySpan<byte> utf8)
    {
        int most = Encoding.UTF8.GetMaxCharCount(utf8.Length);
        if (_chars.Length < most)
            _chars = new char[Math.Max(most, _chars.Length * 2)];
        return _chars.AsSpan(0, Encoding.UTF8.GetChars(utf8, _chars));
    }

    /// <summary>The next line without its '\n', valid until the next call.</summary>
    private bool ReadLine(out ReadOnlySpan<byte> line)
    {
        while (true)
        {
            int newline = _buffer.AsSpan(_start, _end - _start).IndexOf((byte)'\n');
            if (newline >= 0)
            {
                line = _buffer.AsSpan(_start, newline);
                _start += newline + 1;
                return true;
            }
            if (_eof)
            {
                line = _buffer.AsSpan(_start, _end - _start);
                _start = _end;
                return !line.IsEmpty;
            }
            if (_start > 0)
            {
                _buffer.AsSpan(_start, _end - _start).CopyTo(_buffer);
                (_end, _start) = (_end - _start, 0);
            }
            if (_end == _buffer.Length)
                Array.Resize(ref _buffer, _buffer.Length * 2);
            int n = _stream.Read(_buffer, _end, _buffer.Length - _end);
            if (n == 0)
                _eof = true;
            _end += n;
        }
    }

    public void Dispose() => _stream.Dispose();
}
