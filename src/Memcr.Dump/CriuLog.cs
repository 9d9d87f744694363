using System.Diagnostics;

namespace Memcr.Dump;

/// <summary>
/// CRIU's log: levels 0 (nothing but errors) to 4 (debug), -v2 by default; each line stamped with
/// the seconds since the start, as CRIU does. With -o the lines go to a file (errors also to stderr).
/// </summary>
public sealed class CriuLog(int level, TextWriter output, TextWriter? errors = null) : IDisposable
{
    private readonly long _start = Stopwatch.GetTimestamp();
    private readonly Lock _lock = new();

    public int Level => level;

    public void Error(string message)
    {
        Write(1, "Error: ", message);
        if (errors is not null)
        {
            lock (_lock)
                errors.WriteLine($"Error: {message}");
        }
    }

    public void Warn(string message) => Write(2, "Warn: ", message);

    public void Info(string message) => Write(3, "", message);

    public void Debug(string message) => Write(4, "", message);

    private void Write(int at, string prefix, string message)
    {
        if (at > Math.Max(level, 1))
            return;
        double t = Stopwatch.GetElapsedTime(_start).TotalSeconds;
        lock (_lock)
        {
            output.WriteLine($"({t:00.000000}) {prefix}{message}");
            output.Flush();
        }
    }

    public void Dispose()
    {
        if (errors is not null)
            output.Dispose();
    }
}
