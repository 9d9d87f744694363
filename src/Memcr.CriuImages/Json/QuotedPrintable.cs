using System.Text;

namespace Memcr.CriuImages.Json;

/// <summary>
/// Quoted-printable as Python's quopri.encodestring / decodestring do it (binascii.b2a_qp and
/// a2b_qp with quotetabs=False, header=False): crit shows unix socket names this way, so that an
/// abstract name's NUL bytes come out as "=00".
/// </summary>
internal static class QuotedPrintable
{
    private const int MaxLine = 76;

    public static string Encode(ReadOnlySpan<byte> data)
    {
        int newline = data.IndexOf((byte)'\n');
        bool crlf = newline > 0 && data[newline - 1] == '\r';
        var o = new StringBuilder(data.Length * 3);
        int line = 0;
        for (int i = 0; i < data.Length;)
        {
            byte c = data[i];
            bool last = i + 1 == data.Length;
            bool encode = c > 126 || c == '='
                || (c == '.' && line == 0 && (last || data[i + 1] is (byte)'\n' or (byte)'\r' or 0))
                || ((c == '\t' || c == ' ') && last)
                || (c < 33 && c != '\r' && c != '\n' && c != '\t' && c != ' ');
            if (encode)
            {
                if (line + 3 >= MaxLine)
                {
                    SoftBreak(o, crlf);
                    line = 0;
                }
                o.Append('=').Append(c.ToString("X2", System.Globalization.CultureInfo.InvariantCulture));
                i++;
                line += 3;
                continue;
            }
            if (c == '\n' || (c == '\r' && !last && data[i + 1] == '\n'))
            {
                line = 0;
                // Blanks at the end of a line would be lost: they are encoded.
                if (o.Length > 0 && o[^1] is ' ' or '\t')
                {
                    char blank = o[^1];
                    o.Length--;
                    o.Append('=').Append(((int)blank).ToString("X2", System.Globalization.CultureInfo.InvariantCulture));
                }
                if (crlf)
                    o.Append('\r');
                o.Append('\n');
                i += c == '\r' ? 2 : 1;
                continue;
            }
            if (!last && data[i + 1] != '\n' && line + 1 >= MaxLine)
            {
                SoftBreak(o, crlf);
                line = 0;
            }
            line++;
            o.Append((char)c);
            i++;
        }
        return o.ToString();
    }

    private static void SoftBreak(StringBuilder o, bool crlf)
    {
        o.Append('=');
        if (crlf)
            o.Append('\r');
        o.Append('\n');
    }

    public static byte[] Decode(string text)
    {
        var data = Encoding.Latin1.GetBytes(text);
        var o = new List<byte>(data.Length);
        for (int i = 0; i < data.Length;)
        {
            if (data[i] != '=')
            {
                o.Add(data[i++]);
                continue;
            }
            i++;
            if (i >= data.Length)
                break;
            if (data[i] is (byte)'\n' or (byte)'\r')
            {
                // A soft line break.
                while (i < data.Length && data[i] != '\n')
                    i++;
                if (i < data.Length)
                    i++;
            }
            else if (data[i] == '=')
            {
                o.Add((byte)'=');
                i++;
            }
            else if (i + 1 < data.Length && IsHex(data[i]) && IsHex(data[i + 1]))
            {
                o.Add((byte)((HexValue(data[i]) << 4) | HexValue(data[i + 1])));
                i += 2;
            }
            else
            {
                o.Add((byte)'=');
            }
        }
        return [.. o];
    }

    private static bool IsHex(byte c) => c is >= (byte)'0' and <= (byte)'9' or >= (byte)'a' and <= (byte)'f' or >= (byte)'A' and <= (byte)'F';

    private static int HexValue(byte c) => c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
}
