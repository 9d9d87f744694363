namespace Memcr.Cli;

public enum ArgumentKind
{
    None,
    Required,
    Optional,
}

/// <summary>
/// An option as getopt_long knows it: a short letter and/or a long name. An optional argument
/// with <paramref name="Values"/> is also taken from the next word when that does not start with
/// '-' (like the original memcr's -z and -e), and when attached to a short option in a bundle it
/// is a value only if it is one of <paramref name="Values"/> or not made of option letters, so
/// that -zce means -z -c -e while -zlz4 means -z lz4.
/// </summary>
public sealed record OptionSpec(char Short, string? Long, ArgumentKind Argument, string? LongAlias = null, IReadOnlyList<string>? Values = null);

/// <summary>One parsed option occurrence.</summary>
public readonly record struct ParsedOption(OptionSpec Spec, string? Value, string Spelling);

public sealed class GetOptException(string message) : Exception(message);

/// <summary>
/// Parses arguments with GNU getopt_long's rules: bundled short flags (-nm), attached or separate
/// required values (-p1 / -p 1), optional values attached (-zlz4, --compress=lz4) or, for options
/// with known values, in the next word (see <see cref="OptionSpec"/>), long options with '=value'
/// or a separate value, unambiguous prefixes of long names, and "--" ending options.
/// </summary>
public static class GetOpt
{
    public static (List<ParsedOption> Options, List<string> Operands) Parse(IReadOnlyList<string> args, IReadOnlyList<OptionSpec> specs)
    {
        var options = new List<ParsedOption>();
        var operands = new List<string>();
        for (int i = 0; i < args.Count; i++)
        {
            string arg = args[i];
            if (arg == "--")
            {
                operands.AddRange(args.Skip(i + 1));
                break;
            }
            if (arg.StartsWith("--", StringComparison.Ordinal))
            {
                i = ParseLong(args, i, specs, options);
                continue;
            }
            if (arg.Length > 1 && arg[0] == '-')
            {
                i = ParseShortBundle(args, i, specs, options);
                continue;
            }
            operands.Add(arg);
        }
        return (options, operands);
    }

    private static int ParseLong(IReadOnlyList<string> args, int i, IReadOnlyList<OptionSpec> specs, List<ParsedOption> options)
    {
        string body = args[i][2..];
        int eq = body.IndexOf('=', StringComparison.Ordinal);
        string name = eq < 0 ? body : body[..eq];
        string? value = eq < 0 ? null : body[(eq + 1)..];
        var spec = FindLong(name, specs);
        string spelling = "--" + name;
        switch (spec.Argument)
        {
            case ArgumentKind.None when value is not null:
                throw new GetOptException($"option '--{spec.Long}' doesn't allow an argument");
            case ArgumentKind.Required when value is null:
                if (i + 1 >= args.Count)
                    throw new GetOptException($"option '--{spec.Long}' requires an argument");
                value = args[++i];
                break;
            case ArgumentKind.Optional when value is null && spec.Values is not null && NextWordIsValue(args, i):
                value = args[++i];
                break;
        }
        options.Add(new ParsedOption(spec, value, spelling));
        return i;
    }

    private static bool NextWordIsValue(IReadOnlyList<string> args, int i) =>
        i + 1 < args.Count && args[i + 1].Length > 0 && args[i + 1][0] != '-';

    private static OptionSpec FindLong(string name, IReadOnlyList<OptionSpec> specs)
    {
        var exact = specs.FirstOrDefault(s => s.Long == name || s.LongAlias == name);
        if (exact is not null)
            return exact;
        var prefixed = specs.Where(s => (s.Long?.StartsWith(name, StringComparison.Ordinal) ?? false)
                                        || (s.LongAlias?.StartsWith(name, StringComparison.Ordinal) ?? false)).Distinct().ToList();
        if (prefixed.Count == 1 && name.Length > 0)
            return prefixed[0];
        if (prefixed.Count > 1)
            throw new GetOptException($"option '--{name}' is ambiguous; possibilities: {string.Join(' ', prefixed.Select(s => "'--" + s.Long + "'"))}");
        throw new GetOptException($"unrecognized option '--{name}'");
    }

    private static int ParseShortBundle(IReadOnlyList<string> args, int i, IReadOnlyList<OptionSpec> specs, List<ParsedOption> options)
    {
        string arg = args[i];
        for (int j = 1; j < arg.Length; j++)
        {
            char c = arg[j];
            var spec = specs.FirstOrDefault(s => s.Short == c)
                ?? throw new GetOptException($"invalid option -- '{c}'");
            string rest = arg[(j + 1)..];
            switch (spec.Argument)
            {
                case ArgumentKind.None:
                    options.Add(new ParsedOption(spec, null, "-" + c));
                    continue;
                case ArgumentKind.Optional when spec.Values is not null && rest.Length > 0 && !spec.Values.Contains(rest, StringComparer.OrdinalIgnoreCase)
                                                && rest.All(r => specs.Any(s => s.Short == r)):
                    // -zce: the rest of the bundle is more options, not the value.
                    options.Add(new ParsedOption(spec, null, "-" + c));
                    continue;
                case ArgumentKind.Optional when rest.Length == 0 && spec.Values is not null && NextWordIsValue(args, i):
                    options.Add(new ParsedOption(spec, args[i + 1], "-" + c));
                    return i + 1;
                case ArgumentKind.Optional:
                    options.Add(new ParsedOption(spec, rest.Length > 0 ? rest : null, "-" + c));
                    return i;
                default:
                    if (rest.Length > 0)
                    {
                        options.Add(new ParsedOption(spec, rest, "-" + c));
                        return i;
                    }
                    if (i + 1 >= args.Count)
                        throw new GetOptException($"option requires an argument -- '{c}'");
                    options.Add(new ParsedOption(spec, args[i + 1], "-" + c));
                    return i + 1;
            }
        }
        return i;
    }
}
