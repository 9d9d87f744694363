using System.Numerics;
using System.Text;
using System.Text.Json;
using Google.Protobuf.Reflection;

namespace Memcr.CriuImages.Json;

/// <summary>
/// crit's JSON back to a message's bytes (pycriu's dict2pb), fields written in field number order
/// as protobuf does. Stricter than crit: a key that is not a field, a value of the wrong kind or
/// out of range, an unknown flag or enum name, or a missing required field is an error naming
/// its JSON path.
/// </summary>
internal sealed class JsonToMessage(string file)
{
    /// <summary>The bytes of the <paramref name="d"/> message <paramref name="obj"/> describes; a key named <paramref name="skip"/> is left out.</summary>
    public byte[] Convert(MessageDescriptor d, JsonElement obj, string path, int depth = 0, string? skip = null)
    {
        if (obj.ValueKind != JsonValueKind.Object)
            throw Bad(path, $"a {d.Name} message must be a JSON object, not {Kind(obj)}");
        if (depth > 100)
            throw Bad(path, "messages nested more than 100 deep");
        // Python's json keeps the last of duplicate keys.
        var given = new Dictionary<string, JsonElement>(StringComparer.Ordinal);
        foreach (var p in obj.EnumerateObject())
        {
            if (p.Name == skip)
                continue;
            if (d.FindFieldByName(p.Name) is null)
                throw Bad(path, $"unknown field '{p.Name}': {d.Name} has {string.Join(", ", d.Fields.InFieldNumberOrder().Select(f => f.Name))}");
            given[p.Name] = p.Value;
        }
        var missing = d.Fields.InFieldNumberOrder().Where(f => f.IsRequired && !given.ContainsKey(f.Name)).Select(f => f.Name).ToList();
        if (missing.Count > 0)
            throw Bad(path, $"{d.Name} is missing required field{(missing.Count > 1 ? "s" : "")} {string.Join(", ", missing)}");
        var w = new WireWriter();
        foreach (var f in d.Fields.InFieldNumberOrder())
        {
            if (!given.TryGetValue(f.Name, out var value))
                continue;
            string at = $"{path}.{f.Name}";
            if (f.IsRepeated)
                WriteRepeated(w, f, value, at, depth);
            else
                WriteOne(w, f, value, at, depth);
        }
        return w.ToArray();
    }

    private void WriteRepeated(WireWriter w, FieldDescriptor f, JsonElement value, string path, int depth)
    {
        if (value.ValueKind != JsonValueKind.Array)
            throw Bad(path, $"a repeated field must be a JSON array, not {Kind(value)}");
        var items = value.EnumerateArray().ToList();
        if (MessageToJson.Options(f)?.Ipadd == true && items.Count > 0 && items[0].ValueKind == JsonValueKind.String)
        {
            var words = CritFormats.UnAddress(items[0].GetString()!)
                ?? throw Bad($"{path}[0]", $"'{items[0].GetString()}' is not an IPv4 or IPv6 address");
            foreach (ulong word in words)
                w.Scalar(f, word);
            return;
        }
        for (int i = 0; i < items.Count; i++)
            WriteOne(w, f, items[i], $"{path}[{i}]", depth);
    }

    private void WriteOne(WireWriter w, FieldDescriptor f, JsonElement value, string path, int depth)
    {
        switch (f.FieldType)
        {
            case FieldType.Message:
                w.LengthDelimited(f.FieldNumber, Convert(f.MessageType, value, path, depth + 1));
                return;
            case FieldType.String:
                if (value.ValueKind != JsonValueKind.String)
                    throw Bad(path, $"a string field, not {Kind(value)}");
                w.LengthDelimited(f.FieldNumber, Encoding.UTF8.GetBytes(value.GetString()!));
                return;
            case FieldType.Bytes:
                if (value.ValueKind != JsonValueKind.String)
                    throw Bad(path, $"a bytes field must be a base64 string, not {Kind(value)}");
                bool unixName = MessageToJson.Options(f)?.Conv == "unix_name";
                var bytes = unixName ? QuotedPrintable.Decode(value.GetString()!) : CritFormats.FromBase64(value.GetString()!);
                w.LengthDelimited(f.FieldNumber, bytes ?? throw Bad(path, "not valid base64"));
                return;
            case FieldType.Bool:
                w.Scalar(f, value.ValueKind switch
                {
                    JsonValueKind.True => 1UL,
                    JsonValueKind.False => 0UL,
                    _ => throw Bad(path, $"a bool field must be true or false, not {Kind(value)}"),
                });
                return;
            case FieldType.Enum:
                w.Scalar(f, (ulong)(long)EnumNumber(f, value, path));
                return;
            case FieldType.Double or FieldType.Float:
                throw Bad(path, "floating point fields do not occur in CRIU images");
        }
        BigInteger n = Integer(f, value, path);
        var (min, max) = Range(f.FieldType);
        if (n < min || n > max)
            throw Bad(path, $"{n} is out of range for {f.FieldType.ToString().ToLowerInvariant()} ({min}..{max})");
        w.Scalar(f, Wire(f.FieldType, n));
    }

    private int EnumNumber(FieldDescriptor f, JsonElement value, string path)
    {
        if (value.ValueKind == JsonValueKind.String && f.EnumType.FindValueByName(value.GetString()!) is { } named)
            return named.Number;
        if (value.ValueKind == JsonValueKind.Number && value.TryGetInt32(out int n) && f.EnumType.FindValueByNumber(n) is not null)
            return n;
        throw Bad(path, $"{value.GetRawText()} is not a value of {f.EnumType.Name} ({string.Join(", ", f.EnumType.Values.Select(v => v.Name))})");
    }

    /// <summary>A number given as a JSON number, or as crit prints it: hex, flags, dev, a value's name.</summary>
    private BigInteger Integer(FieldDescriptor f, JsonElement value, string path)
    {
        if (value.ValueKind == JsonValueKind.Number)
        {
            if (BigInteger.TryParse(value.GetRawText(), System.Globalization.NumberStyles.AllowLeadingSign, System.Globalization.CultureInfo.InvariantCulture, out var n))
                return n;
            throw Bad(path, $"{value.GetRawText()} is not a whole number");
        }
        if (value.ValueKind != JsonValueKind.String)
            throw Bad(path, $"a number field, not {Kind(value)}");
        string text = value.GetString()!;
        var opts = MessageToJson.Options(f);
        if (opts?.Dev == true)
            return CritFormats.UnDev(text, opts.Odev) ?? throw Bad(path, $"'{text}' is not a device as major:minor");
        if (opts is { HasFlags: true } && CritFormats.HasFlagTable(opts.Flags))
            return CritFormats.UnFlags(opts.Flags, text, out string? problem) ?? throw Bad(path, problem!);
        if (opts is { HasDict: true } && CritFormats.ValueOf(opts.Dict, f.Name, text) is { } known)
            return known;
        return CritFormats.ParsePythonInt(text) ?? throw Bad(path, $"'{text}' is not a number");
    }

    private static (BigInteger Min, BigInteger Max) Range(FieldType t) => t switch
    {
        FieldType.Int32 or FieldType.SInt32 or FieldType.SFixed32 => (int.MinValue, int.MaxValue),
        FieldType.UInt32 or FieldType.Fixed32 => (0, uint.MaxValue),
        FieldType.Int64 or FieldType.SInt64 or FieldType.SFixed64 => (long.MinValue, long.MaxValue),
        _ => (0, ulong.MaxValue),
    };

    /// <summary>The wire form of an in-range number: zigzag for sint, sign extension for negative int32.</summary>
    private static ulong Wire(FieldType t, BigInteger n) => t switch
    {
        FieldType.SInt32 => (uint)(((int)n << 1) ^ ((int)n >> 31)),
        FieldType.SInt64 => (ulong)(((long)n << 1) ^ ((long)n >> 63)),
        FieldType.SFixed32 => (uint)(int)n,
        FieldType.Int32 or FieldType.Int64 or FieldType.SFixed64 => (ulong)(long)n,
        _ => (ulong)n,
    };

    private static string Kind(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.Object => "an object",
        JsonValueKind.Array => "an array",
        JsonValueKind.String => $"the string \"{e.GetString()}\"",
        JsonValueKind.Number => $"the number {e.GetRawText()}",
        JsonValueKind.True or JsonValueKind.False => e.GetRawText(),
        _ => "null",
    };

    public CriuImageException Bad(string path, string problem) => new(file, path, problem);
}

/// <summary>Writes protobuf fields into a growing buffer.</summary>
internal sealed class WireWriter
{
    private readonly System.Buffers.ArrayBufferWriter<byte> _out = new();

    public byte[] ToArray() => _out.WrittenSpan.ToArray();

    public void Scalar(FieldDescriptor f, ulong value)
    {
        int wire = MessageToJson.WireTypeOf(f.FieldType);
        Varint(((ulong)f.FieldNumber << 3) | (uint)wire);
        switch (wire)
        {
            case 1:
                BitConverter.TryWriteBytes(_out.GetSpan(8), value);
                _out.Advance(8);
                break;
            case 5:
                BitConverter.TryWriteBytes(_out.GetSpan(4), (uint)value);
                _out.Advance(4);
                break;
            default:
                Varint(value);
                break;
        }
    }

    public void LengthDelimited(int number, ReadOnlySpan<byte> bytes)
    {
        Varint(((ulong)number << 3) | 2);
        Varint((ulong)bytes.Length);
        bytes.CopyTo(_out.GetSpan(bytes.Length));
        _out.Advance(bytes.Length);
    }

    private void Varint(ulong v)
    {
        while (v >= 0x80)
        {
            Byte((byte)(v | 0x80));
            v >>= 7;
        }
        Byte((byte)v);
    }

    private void Byte(byte b)
    {
        _out.GetSpan(1)[0] = b;
        _out.Advance(1);
    }
}
