using System.Text.Json;

namespace Memcr.Client;

/// <summary>One process the service holds: checkpointing, checkpointed or restoring.</summary>
public sealed record MemcrProcessStatus(
    int Pid,
    string State,
    DateTimeOffset Since,
    string? Image,
    long ImageBytes,
    long SavedBytes,
    long RssSavedKb,
    bool Adopted);

/// <summary>The answer to a status request.</summary>
public sealed record MemcrStatus(int DaemonPid, string Version, IReadOnlyList<MemcrProcessStatus> Processes, string Json)
{
    public static MemcrStatus Parse(string json)
    {
        using var doc = JsonDocument.Parse(json);
        var root = doc.RootElement;
        var processes = new List<MemcrProcessStatus>();
        foreach (var p in root.GetProperty("processes").EnumerateArray())
        {
            processes.Add(new MemcrProcessStatus(
                p.GetProperty("pid").GetInt32(),
                p.GetProperty("state").GetString() ?? "",
                p.GetProperty("since").GetDateTimeOffset(),
                p.TryGetProperty("image", out var image) && image.ValueKind == JsonValueKind.String ? image.GetString() : null,
                p.GetProperty("image_bytes").GetInt64(),
                p.GetProperty("saved_bytes").GetInt64(),
                p.GetProperty("rss_saved_kb").GetInt64(),
                p.TryGetProperty("adopted", out var adopted) && adopted.GetBoolean()));
        }
        return new MemcrStatus(root.GetProperty("daemon_pid").GetInt32(), root.GetProperty("version").GetString() ?? "", processes, json);
    }
}
