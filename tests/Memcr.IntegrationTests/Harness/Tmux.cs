using System.Diagnostics;

namespace Memcr.IntegrationTests.Harness;

/// <summary>A real terminal: a tmux server of its own running an interactive bash, driven with send-keys and read with capture-pane.</summary>
public sealed class Tmux : IDisposable
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);
    private readonly string _socket = $"memcr-test-{Guid.NewGuid():N}"[..24];

    private Tmux()
    {
    }

    public static Tmux Start(string dir)
    {
        var t = new Tmux();
        Repo.MustRun("tmux", "-L", t._socket, "new-session", "-d", "-s", "t", "-x", "160", "-y", "50", "-c", dir,
            "env", "PS1=$ ", "bash", "--norc", "--noprofile");
        t.WaitFor("$ ");
        return t;
    }

    /// <summary>The pane's terminal device (/dev/pts/N).</summary>
    public string Tty => Repo.Run("tmux", "-L", _socket, "display", "-p", "-t", "t", "#{pane_tty}").Output.Trim();

    public void Line(string command) => Repo.MustRun("tmux", "-L", _socket, "send-keys", "-t", "t", command, "Enter");

    public void Keys(string keys) => Repo.MustRun("tmux", "-L", _socket, "send-keys", "-t", "t", keys);

    public string Screen => Repo.Run("tmux", "-L", _socket, "capture-pane", "-p", "-J", "-S", "-200", "-t", "t").Output;

    /// <summary>Waits until the screen shows <paramref name="text"/> (after <paramref name="after"/>, when given); returns the screen.</summary>
    public string WaitFor(string text, string? after = null)
    {
        var sw = Stopwatch.StartNew();
        while (true)
        {
            string screen = Screen;
            int from = after is null ? 0 : screen.LastIndexOf(after, StringComparison.Ordinal);
            if (from >= 0 && screen.IndexOf(text, from, StringComparison.Ordinal) >= 0)
                return screen;
            if (sw.Elapsed > Patience)
                throw new TimeoutException($"the terminal never showed '{text}'{(after is null ? "" : $" after '{after}'")}:\n{screen}");
            Thread.Sleep(50);
        }
    }

    public void Dispose() => Repo.Run("tmux", "-L", _socket, "kill-server");
}
