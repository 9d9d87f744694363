using System.Text;
using Google.Protobuf.Reflection;
using Memcr.CriuImages.Json;

namespace Memcr.CriuImages.Tests;

/// <summary>
/// Random messages of any CRIU message type, as canonical wire bytes (fields in number order, as
/// protobuf writes them): required fields always, optional ones half the time, repeated ones 0–3
/// times, every value of its type's range.
/// </summary>
internal static class RandomMessages
{
    public static byte[] Make(MessageDescriptor d, Random rng, int depth = 0)
    {
        var w = new WireWriter();
        foreach (var f in d.Fields.InFieldNumberOrder())
        {
            bool message = f.FieldType == FieldType.Message;
            int count;
            if (f.IsRepeated)
            {
                count = message && depth >= 3 ? 0 : rng.Next(4);
                // Addresses are one word (IPv4) or four (IPv6).
                if (MessageToJson.Options(f)?.Ipadd == true)
                    count = new[] { 0, 1, 4 }[rng.Next(3)];
            }
            else
            {
                count = f.IsRequired || (rng.Next(2) == 0 && !(message && depth >= 3)) ? 1 : 0;
            }
            for (int i = 0; i < count; i++)
            {
                switch (f.FieldType)
                {
                    case FieldType.Message:
                        w.LengthDelimited(f.FieldNumber, Make(f.MessageType, rng, depth + 1));
                        break;
                    case FieldType.String:
                        w.LengthDelimited(f.FieldNumber, Encoding.UTF8.GetBytes(Text(rng)));
                        break;
                    case FieldType.Bytes:
                        w.LengthDelimited(f.FieldNumber, MessageToJson.Options(f)?.Conv == "unix_name" ? UnixName(rng) : Bytes(rng));
                        break;
                    case FieldType.Enum:
                        w.Scalar(f, (ulong)(long)f.EnumType.Values[rng.Next(f.EnumType.Values.Count)].Number);
                        break;
                    case FieldType.Bool:
                        w.Scalar(f, (ulong)rng.Next(2));
                        break;
                    default:
                        w.Scalar(f, Number(f.FieldType, rng));
                        break;
                }
            }
        }
        return w.ToArray();
    }

    private static ulong Number(FieldType t, Random rng)
    {
        ulong raw = rng.Next(3) switch
        {
            0 => (ulong)rng.Next(256),
            1 => (ulong)rng.NextInt64(),
            _ => ulong.MaxValue - (ulong)rng.Next(3),
        };
        return t switch
        {
            FieldType.UInt32 or FieldType.Fixed32 or FieldType.SInt32 => raw & uint.MaxValue,
            FieldType.Int32 or FieldType.SFixed32 => (ulong)(long)(int)raw, // sign-extended, as protobuf writes a negative int32
            _ => raw,
        };
    }

    private static string Text(Random rng)
    {
        const string pool = "abcXYZ019 /._-\"\\\n\té€中😀";
        var b = new StringBuilder();
        for (int i = rng.Next(12); i > 0; i--)
        {
            int at = rng.Next(pool.Length);
            if (char.IsHighSurrogate(pool[at]))
                b.Append(pool, at, 2);
            else if (!char.IsLowSurrogate(pool[at]))
                b.Append(pool[at]);
        }
        return b.ToString();
    }

    private static byte[] Bytes(Random rng)
    {
        var b = new byte[rng.Next(0, 200)];
        rng.NextBytes(b);
        return b;
    }

    /// <summary>
    /// Socket names: any byte but CR and LF, which quoted-printable (and so crit) turns into line
    /// ends of its own choosing.
    /// </summary>
    private static byte[] UnixName(Random rng)
    {
        var b = Bytes(rng);
        for (int i = 0; i < b.Length; i++)
        {
            if (b[i] is (byte)'\r' or (byte)'\n')
                b[i] = 0;
        }
        return b;
    }
}
