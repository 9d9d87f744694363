using System.Globalization;

namespace Memcr.IntegrationTests.Harness;

/// <summary>
/// The directories a test run makes (images, sockets, compiled targets), named after the run's
/// pid and removed when it ends. A test that fails, or that keeps its images on purpose (an
/// incremental chain is kept for the next checkpoint), must not leave them behind: before this,
/// every run of the suite left a GiB in /var/tmp. The test host may be ended before its exit
/// handler is done, so each run also removes what runs that are gone left.
/// </summary>
public static class ScratchDirs
{
    private static readonly List<string> Made = [];
    private static readonly HashSet<string> Swept = [];

    /// <summary>A new directory <paramref name="parent"/>/<paramref name="prefix"/>-PID-<paramref name="name"/>-RANDOM.</summary>
    public static string New(string parent, string prefix, string name)
    {
        string dir = Path.Combine(parent, $"{prefix}-{Environment.ProcessId}-{name}-{Guid.NewGuid().ToString("N")[..8]}");
        lock (Made)
        {
            if (Made.Count == 0)
                AppDomain.CurrentDomain.ProcessExit += (_, _) => RemoveAll();
            RemoveLeftovers(parent, prefix);
            Directory.CreateDirectory(dir);
            Made.Add(dir);
        }
        return dir;
    }

    /// <summary>Removes, once a run, what earlier runs of the suite that are no longer running made in <paramref name="parent"/>.</summary>
    private static void RemoveLeftovers(string parent, string prefix)
    {
        if (!Swept.Add(Path.Combine(parent, prefix)))
            return;
        int at = prefix.Split('-').Length; // where the pid is in a name split at '-'
        foreach (string dir in Directory.EnumerateDirectories(parent, prefix + "-*"))
        {
            string[] parts = Path.GetFileName(dir).Split('-');
            if (parts.Length > at && int.TryParse(parts[at], NumberStyles.None, CultureInfo.InvariantCulture, out int pid)
                && pid != Environment.ProcessId && !Directory.Exists($"/proc/{pid}"))
                Remove(dir);
        }
    }

    private static void RemoveAll()
    {
        lock (Made)
            Made.ForEach(Remove);
    }

    private static void Remove(string dir)
    {
        try
        {
            if (Directory.Exists(dir))
                Directory.Delete(dir, recursive: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Console.Error.WriteLine($"cannot remove {dir}: {e.Message}");
        }
    }
}
