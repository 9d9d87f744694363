namespace Memcr.Engine;

/// <summary>memcr's console log: each line prefixed as the original prints it.</summary>
public sealed class Log(TextWriter output, bool debug = false)
{
    private Lock _lock = new();
    private string _context = "";

    public bool DebugEnabled { get; } = debug;

    /// <summary>A log to the same output whose lines start with <paramref name="context"/> (e.g. "pid 42: ").</summary>
    public Log For(string context) => new(output, DebugEnabled) { _lock = _lock, _context = _context + context };

    /// <summary>"[-]": something failed.</summary>
    public void Error(string message) => Write("[-] ", message);

    /// <summary>"[x]": a milestone the user waits for.</summary>
    public void Milestone(string message) => Write("[x] ", message);

    /// <summary>"[i]": information.</summary>
    public void Info(string message) => Write("[i] ", message);

    /// <summary>"[+]": a step starts.</summary>
    public void Step(string message) => Write("[+] ", message);

    /// <summary>Details shown only with --verbose.</summary>
    public void Debug(string message)
    {
        if (DebugEnabled)
            Write("[+] ", message);
    }

    private void Write(string prefix, string message)
    {
        lock (_lock)
        {
            output.Write(prefix);
            output.Write(_context);
            output.WriteLine(message);
            output.Flush();
        }
    }
}
