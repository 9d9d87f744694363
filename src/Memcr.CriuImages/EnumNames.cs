using System.Globalization;

namespace Memcr.CriuImages;

/// <summary>Enum values as the .proto spells them ("REG", "UNIXSK"): what crit prints and messages should say.</summary>
public static class EnumNames
{
    public static string OriginalName(this fd_types t) =>
        fdinfo_entry.Descriptor.FindFieldByName("type").EnumType.FindValueByNumber((int)t) is { } v ? v.Name : ((int)t).ToString(CultureInfo.InvariantCulture);
}
