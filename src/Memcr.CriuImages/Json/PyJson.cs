using System.Globalization;
using System.Text;

namespace Memcr.CriuImages.Json;

/// <summary>A JSON object whose keys keep the order they were added in (as crit's OrderedDict).</summary>
internal sealed class PyDict : List<KeyValuePair<string, object?>>
{
    public void Add(string key, object? value) => Add(new KeyValuePair<string, object?>(key, value));
}

/// <summary>
/// Writes JSON exactly as Python's json.dump does (what crit prints): with an indent, items are
/// separated by "," and a new line, keys by ": "; without one, by ", " and ": ". Strings are
/// ASCII, everything outside ' '..'~' escaped. Values are string, long, ulong, bool, null,
/// <see cref="PyDict"/> and lists.
/// </summary>
internal sealed class PyJsonWriter(TextWriter output, int? indent)
{
    public int? Indent => indent;

    public void WriteValue(object? value, int level)
    {
        switch (value)
        {
            case null:
                output.Write("null");
                break;
            case string s:
                WriteString(s);
                break;
            case bool b:
                output.Write(b ? "true" : "false");
                break;
            case long l:
                output.Write(l.ToString(CultureInfo.InvariantCulture));
                break;
            case ulong u:
                output.Write(u.ToString(CultureInfo.InvariantCulture));
                break;
            case PyDict d:
                WriteDict(d, level);
                break;
            case List<object?> list:
                WriteList(list, level);
                break;
            default:
                throw new InvalidOperationException($"no JSON form for {value.GetType().Name}");
        }
    }

    private void WriteDict(PyDict d, int level)
    {
        if (d.Count == 0)
        {
            output.Write("{}");
            return;
        }
        output.Write('{');
        for (int i = 0; i < d.Count; i++)
        {
            Separate(i, level + 1);
            WriteString(d[i].Key);
            output.Write(": ");
            WriteValue(d[i].Value, level + 1);
        }
        Close(level);
        output.Write('}');
    }

    private void WriteList(List<object?> list, int level)
    {
        if (list.Count == 0)
        {
            output.Write("[]");
            return;
        }
        output.Write('[');
        for (int i = 0; i < list.Count; i++)
        {
            Separate(i, level + 1);
            WriteValue(list[i], level + 1);
        }
        Close(level);
        output.Write(']');
    }

    /// <summary>What goes before item <paramref name="i"/> of a container whose items are at <paramref name="level"/>.</summary>
    public void Separate(int i, int level)
    {
        if (indent is not { } n)
        {
            if (i > 0)
                output.Write(", ");
            return;
        }
        output.Write(i > 0 ? ",\n" : "\n");
        output.Write(new string(' ', n * level));
    }

    /// <summary>What goes before the closing bracket of a non-empty container at <paramref name="level"/>.</summary>
    public void Close(int level)
    {
        if (indent is { } n)
        {
            output.Write('\n');
            output.Write(new string(' ', n * level));
        }
    }

    public void WriteString(string s)
    {
        var b = new StringBuilder(s.Length + 2);
        b.Append('"');
        foreach (char c in s)
        {
            switch (c)
            {
                case '"': b.Append("\\\""); break;
                case '\\': b.Append("\\\\"); break;
                case '\n': b.Append("\\n"); break;
                case '\r': b.Append("\\r"); break;
                case '\t': b.Append("\\t"); break;
                case '\b': b.Append("\\b"); break;
                case '\f': b.Append("\\f"); break;
                default:
                    if (c < ' ' || c > '~')
                        b.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
                    else
                        b.Append(c);
                    break;
            }
        }
        b.Append('"');
        output.Write(b.ToString());
    }
}
