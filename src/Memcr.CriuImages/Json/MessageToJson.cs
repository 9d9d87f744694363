using System.Numerics;
using System.Text;
using Google.Protobuf.Reflection;

namespace Memcr.CriuImages.Json;

/// <summary>
/// A message's bytes as crit's JSON shows them (pycriu's pb2dict): the fields that are set, in
/// field number order, enums by name, bytes in base64, and with --pretty the (criu) options:
/// hex (inherited by every field of a message marked hex), dev, flags, value names, addresses.
/// It reads the wire format against the schema's descriptors, so nothing here needs reflection.
/// </summary>
internal static class MessageToJson
{
    private const int MaxDepth = 100;

    public static PyDict Convert(MessageDescriptor d, ReadOnlySpan<byte> data, bool pretty, bool hex = false, int depth = 0)
    {
        if (depth > MaxDepth)
            throw new WireException($"messages nested more than {MaxDepth} deep");
        var fields = Gather(d, data);
        var dict = new PyDict();
        foreach (var f in d.Fields.InFieldNumberOrder())
        {
            if (!fields.TryGetValue(f.FieldNumber, out var raw))
                continue;
            object? value = f.IsRepeated ? RepeatedValue(f, raw, pretty, hex, depth) : SingleValue(f, raw, pretty, hex, depth);
            if (value is not null)
                dict.Add(f.Name, value);
        }
        return dict;
    }

    /// <summary>
    /// The required fields a message's bytes lack, as paths ("fown.pid"): CRIU (protobuf-c) refuses
    /// to read a message that has any.
    /// </summary>
    public static List<string> MissingRequired(MessageDescriptor d, ReadOnlySpan<byte> data, string prefix = "", int depth = 0)
    {
        var missing = new List<string>();
        if (depth > MaxDepth)
            return missing;
        var fields = Gather(d, data);
        foreach (var f in d.Fields.InFieldNumberOrder())
        {
            bool present = fields.TryGetValue(f.FieldNumber, out var raw);
            if (f.IsRequired && !present)
                missing.Add(prefix + f.Name);
            if (!present || f.FieldType != FieldType.Message)
                continue;
            if (f.IsRepeated)
            {
                for (int i = 0; i < raw!.Count; i++)
                    missing.AddRange(MissingRequired(f.MessageType, raw[i].Bytes, $"{prefix}{f.Name}[{i}].", depth + 1));
            }
            else
            {
                missing.AddRange(MissingRequired(f.MessageType, raw!.SelectMany(x => x.Bytes!).ToArray(), $"{prefix}{f.Name}.", depth + 1));
            }
        }
        return missing;
    }

    /// <summary>One occurrence of a field on the wire: a number, or the bytes of a length-delimited field.</summary>
    private readonly record struct Raw(ulong Number, byte[]? Bytes);

    /// <summary>The known fields' occurrences, by field number; unknown fields and wrong wire types are skipped, as protobuf does.</summary>
    private static Dictionary<int, List<Raw>> Gather(MessageDescriptor d, ReadOnlySpan<byte> data)
    {
        var fields = new Dictionary<int, List<Raw>>();
        var r = new WireReader(data);
        while (!r.AtEnd)
        {
            var (number, wire) = r.ReadTag();
            var f = d.FindFieldByNumber(number);
            int expected = f is null ? -1 : WireTypeOf(f.FieldType);
            if (f is null || (wire != expected && !(wire == 2 && f.IsRepeated && expected != 2)))
            {
                r.Skip(wire, number);
                continue;
            }
            if (!fields.TryGetValue(number, out var list))
                fields[number] = list = [];
            switch (wire)
            {
                case 0: list.Add(new Raw(r.ReadVarint(), null)); break;
                case 1: list.Add(new Raw(r.ReadFixed64(), null)); break;
                case 5: list.Add(new Raw(r.ReadFixed32(), null)); break;
                default:
                    var bytes = r.ReadLengthDelimited();
                    if (expected == 2)
                    {
                        list.Add(new Raw(0, bytes.ToArray()));
                    }
                    else
                    {
                        // A packed run of scalars.
                        var p = new WireReader(bytes);
                        while (!p.AtEnd)
                            list.Add(new Raw(expected switch { 0 => p.ReadVarint(), 1 => p.ReadFixed64(), _ => p.ReadFixed32() }, null));
                    }
                    break;
            }
        }
        return fields;
    }

    internal static int WireTypeOf(FieldType t) => t switch
    {
        FieldType.Double or FieldType.Fixed64 or FieldType.SFixed64 => 1,
        FieldType.Float or FieldType.Fixed32 or FieldType.SFixed32 => 5,
        FieldType.String or FieldType.Bytes or FieldType.Message => 2,
        FieldType.Group => 3,
        _ => 0,
    };

    private static object? SingleValue(FieldDescriptor f, List<Raw> raw, bool pretty, bool hex, int depth)
    {
        if (f.FieldType == FieldType.Message)
        {
            // Occurrences of a message field merge: their bytes concatenated.
            var all = raw.SelectMany(x => x.Bytes!).ToArray();
            return Convert(f.MessageType, all, pretty, hex || Options(f)?.Hex == true, depth + 1);
        }
        if (f.FieldType == FieldType.Enum)
        {
            // A number the enum does not define is kept aside by protobuf: it does not set the field.
            var known = raw.Where(x => f.EnumType.FindValueByNumber((int)x.Number) is not null).ToList();
            return known.Count == 0 ? null : Scalar(f, known[^1], pretty, hex);
        }
        return Scalar(f, raw[^1], pretty, hex);
    }

    private static List<object?>? RepeatedValue(FieldDescriptor f, List<Raw> raw, bool pretty, bool hex, int depth)
    {
        var opts = Options(f);
        if (pretty && opts?.Ipadd == true && CritFormats.Address(raw.Select(x => (ulong)(uint)x.Number).ToList()) is { } address)
            return new List<object?> { address };
        var list = new List<object?>(raw.Count);
        foreach (var x in raw)
        {
            if (f.FieldType == FieldType.Message)
                list.Add(Convert(f.MessageType, x.Bytes, pretty, hex || opts?.Hex == true, depth + 1));
            else if (f.FieldType != FieldType.Enum || f.EnumType.FindValueByNumber((int)x.Number) is not null)
                list.Add(Scalar(f, x, pretty, hex));
        }
        return list.Count == 0 ? null : list;
    }

    private static object? Scalar(FieldDescriptor f, Raw x, bool pretty, bool hex)
    {
        switch (f.FieldType)
        {
            case FieldType.Bool:
                return x.Number != 0;
            case FieldType.String:
                return Encoding.UTF8.GetString(x.Bytes!);
            case FieldType.Bytes:
                return Options(f)?.Conv == "unix_name" ? QuotedPrintable.Encode(x.Bytes) : CritFormats.Base64Lines(x.Bytes);
            case FieldType.Enum:
                return f.EnumType.FindValueByNumber((int)x.Number).Name;
            case FieldType.Double or FieldType.Float:
                throw new WireException($"field {f.Name}: floating point fields do not occur in CRIU images");
        }
        BigInteger n = Integer(f.FieldType, x.Number);
        if (!pretty)
            return Box(n);
        var opts = Options(f);
        if (hex || opts?.Hex == true)
            return CritFormats.Hex(n);
        if (opts?.Dev == true)
            return CritFormats.Dev((ulong)(n & ulong.MaxValue), opts.Odev);
        if (opts is { HasFlags: true })
            return CritFormats.Flags(opts.Flags, n) ?? CritFormats.Hex(n);
        if (opts is { HasDict: true })
            return CritFormats.ValueName(opts.Dict, f.Name, n) ?? Box(n);
        return Box(n);
    }

    /// <summary>The value of a number as the field's type reads it.</summary>
    internal static BigInteger Integer(FieldType t, ulong raw) => t switch
    {
        FieldType.Int32 or FieldType.SFixed32 => (int)raw,
        FieldType.UInt32 or FieldType.Fixed32 => (uint)raw,
        FieldType.Int64 or FieldType.SFixed64 => (long)raw,
        FieldType.SInt32 => (int)((uint)raw >> 1) ^ -(int)((uint)raw & 1),
        FieldType.SInt64 => (long)(raw >> 1) ^ -(long)(raw & 1),
        _ => raw,
    };

    /// <summary>A number for <see cref="PyJsonWriter"/>: ulong, or long when negative.</summary>
    private static object Box(BigInteger n)
    {
        if (n.Sign < 0)
        {
            long negative = (long)n;
            return negative;
        }
        ulong value = (ulong)n;
        return value;
    }

    /// <summary>The field's (criu) options; GetOptions() copies them at each call, so they are kept.</summary>
    internal static CRIU_Opts? Options(FieldDescriptor f) =>
        OptionsCache.GetOrAdd(f, static f => f.GetOptions() is { } o && o.HasExtension(CriuOptsExtensions.Criu) ? o.GetExtension(CriuOptsExtensions.Criu) : null);

    private static readonly System.Collections.Concurrent.ConcurrentDictionary<FieldDescriptor, CRIU_Opts?> OptionsCache = new();
}
