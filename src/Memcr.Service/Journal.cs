using System.Globalization;
using System.Text.Json;
using Memcr.Engine;
using Memcr.Image;
using Memcr.Linux.Proc;

namespace Memcr.Service;

/// <summary>
/// What the service knows of one checkpointed process, kept on disk until it is restored; during a
/// lazy restore, <see cref="LazyFd"/> names the process's copy of its userfaultfd.
/// </summary>
public sealed record JournalEntry(
    int Pid,
    ulong StartTime,
    string Image,
    ulong ImageId,
    Codec Codec,
    Encryption Encryption,
    bool PersistentKey,
    bool FilePages,
    DateTimeOffset Since,
    long ImageBytes,
    long SavedBytes,
    long RssSavedKb,
    int LazyFd = -1)
{
    /// <summary>The entry of a checkpoint about to drop its process's memory.</summary>
    public static JournalEntry Of(CheckpointSession s, CheckpointOptions options, bool persistentKey, DateTimeOffset since) =>
        new(s.Pid, ProcFs.ReadStartTime(s.Pid), s.ImagePath, s.ImageId, options.Codec, options.Encryption,
            persistentKey, options.IncludeFileMappings, since, s.ImageBytes, (long)s.SavedBytes, 0);

    /// <summary>Whether its process is running, its pages coming back from a lazy restore (which holds the process's userfaultfd <see cref="LazyFd"/>).</summary>
    public bool Lazy => LazyFd >= 0;
}

/// <summary>
/// The service journal: one small file per checkpointed process in the dump directory,
/// <c>memcr-PID.journal</c>, written (and fsynced) before the process's memory is dropped and
/// removed once it has its memory back or is gone. A memcr service that starts finds in it the
/// processes a previous one left frozen when it died, and takes them over.
/// </summary>
public static class Journal
{
    private const string Suffix = ".journal";

    public static string PathFor(string dir, int pid) => Path.Combine(dir, $"memcr-{pid}{Suffix}");

    public static void Write(string dir, JournalEntry e)
    {
        string path = PathFor(dir, e.Pid);
        string temp = path + ".new";
        using (var file = new FileStream(temp, new FileStreamOptions
        {
            Mode = FileMode.Create,
            Access = FileAccess.Write,
            UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite,
        }))
        {
            using (var w = new Utf8JsonWriter(file, new JsonWriterOptions { Indented = true }))
            {
                w.WriteStartObject();
                w.WriteNumber("pid", e.Pid);
                w.WriteNumber("start_time", e.StartTime);
                w.WriteString("image", e.Image);
                w.WriteString("image_id", e.ImageId.ToString("x16", CultureInfo.InvariantCulture));
                w.WriteNumber("codec", (int)e.Codec);
                w.WriteNumber("encryption", (int)e.Encryption);
                w.WriteBoolean("persistent_key", e.PersistentKey);
                w.WriteBoolean("file_pages", e.FilePages);
                w.WriteString("since", e.Since);
                w.WriteNumber("image_bytes", e.ImageBytes);
                w.WriteNumber("saved_bytes", e.SavedBytes);
                w.WriteNumber("rss_saved_kb", e.RssSavedKb);
                if (e.Lazy)
                    w.WriteNumber("lazy_fd", e.LazyFd);
                w.WriteEndObject();
            }
            file.Flush(flushToDisk: true);
        }
        File.Move(temp, path, overwrite: true);
    }

    /// <summary>The entry of <paramref name="pid"/> in <paramref name="dir"/>, if there is a readable one.</summary>
    public static JournalEntry? Read(string dir, int pid)
    {
        try
        {
            return Parse(PathFor(dir, pid));
        }
        catch (Exception e) when (e is JsonException or FormatException or KeyNotFoundException or InvalidOperationException or IOException)
        {
            return null;
        }
    }

    public static void Delete(string dir, int pid)
    {
        try
        {
            File.Delete(PathFor(dir, pid));
        }
        catch (IOException)
        {
        }
    }

    /// <summary>Every entry in <paramref name="dir"/>; unreadable ones are reported through <paramref name="bad"/> and skipped.</summary>
    public static List<JournalEntry> ReadAll(string dir, Action<string, string> bad)
    {
        var entries = new List<JournalEntry>();
        foreach (string path in Directory.GetFiles(dir, "memcr-*" + Suffix).Order(StringComparer.Ordinal))
        {
            try
            {
                entries.Add(Parse(path));
            }
            catch (Exception e) when (e is JsonException or FormatException or KeyNotFoundException or InvalidOperationException or IOException)
            {
                bad(path, e.Message);
            }
        }
        return entries;
    }

    private static JournalEntry Parse(string path)
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
        var r = doc.RootElement;
        return new JournalEntry(
            r.GetProperty("pid").GetInt32(),
            r.GetProperty("start_time").GetUInt64(),
            r.GetProperty("image").GetString() ?? throw new FormatException("no image"),
            ulong.Parse(r.GetProperty("image_id").GetString() ?? "", NumberStyles.HexNumber, CultureInfo.InvariantCulture),
            (Codec)r.GetProperty("codec").GetInt32(),
            (Encryption)r.GetProperty("encryption").GetInt32(),
            r.GetProperty("persistent_key").GetBoolean(),
            r.GetProperty("file_pages").GetBoolean(),
            r.GetProperty("since").GetDateTimeOffset(),
            r.GetProperty("image_bytes").GetInt64(),
            r.GetProperty("saved_bytes").GetInt64(),
            r.GetProperty("rss_saved_kb").GetInt64(),
            r.TryGetProperty("lazy_fd", out var fd) ? fd.GetInt32() : -1);
    }
}
