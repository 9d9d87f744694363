namespace Memcr.Engine;

/// <summary>memcr's console log: each line prefixed as the original prints it.</summary>
public sealed class Log(TextWriter output, bool debug = false)
{
    private readonly Lock _lock = new();

    public bool DebugEnabled { get; } = debug;

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
            output.WriteLine(message);
            output.Flush();
        }
    }
}
