using System.Diagnostics;

namespace Memcr.IntegrationTests.Harness;

/// <summary>A running memcr, its output collected line by line.</summary>
public sealed class MemcrProcess : IDisposable
{
    public const string Prompt = "press enter to restore process memory and unfreeze";
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(120);

    private readonly Process _process;
    private readonly List<string> _lines = [];
    private readonly object _sync = new();

    private MemcrProcess(Process process) => _process = process;

    public int Pid => _process.Id;

    public static MemcrProcess Start(params string[] args) => StartFile(Repo.Memcr, args);

    /// <summary>Starts another program (e.g. memcr through setpriv), its output collected the same way.</summary>
    public static MemcrProcess StartFile(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file)
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in args)
            psi.ArgumentList.Add(a);
        var p = new Process { StartInfo = psi };
        var m = new MemcrProcess(p);
        p.OutputDataReceived += (_, e) => m.Add(e.Data);
        p.ErrorDataReceived += (_, e) => m.Add(e.Data);
        p.Start();
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        return m;
    }

    /// <summary>Runs memcr to completion with stdin closed; returns its exit code.</summary>
    public static (int ExitCode, string Output) Run(params string[] args)
    {
        using var m = Start(args);
        m._process.StandardInput.Close();
        int code = m.WaitForExit();
        return (code, m.Output);
    }

    private void Add(string? line)
    {
        if (line is null)
            return;
        lock (_sync)
        {
            _lines.Add(line);
            Monitor.PulseAll(_sync);
        }
    }

    public string Output
    {
        get
        {
            lock (_sync)
                return string.Join('\n', _lines);
        }
    }

    /// <summary>Waits for an output line containing <paramref name="text"/>.</summary>
    public void WaitFor(string text)
    {
        var sw = Stopwatch.StartNew();
        while (true)
        {
            bool exited = _process.HasExited;
            if (exited)
            {
                // Outside the lock: waiting for the exit waits for the output handlers, which take it.
                _process.WaitForExit();
            }
            lock (_sync)
            {
                if (_lines.Any(l => l.Contains(text, StringComparison.Ordinal)))
                    return;
                if (exited)
                    throw new InvalidOperationException($"memcr exited ({_process.ExitCode}) without printing '{text}':\n{string.Join('\n', _lines)}");
                var left = Patience - sw.Elapsed;
                if (left <= TimeSpan.Zero)
                    throw new TimeoutException($"memcr did not print '{text}':\n{string.Join('\n', _lines)}");
                Monitor.Wait(_sync, TimeSpan.FromMilliseconds(Math.Min(200, left.TotalMilliseconds)));
            }
        }
    }

    public void WaitForPrompt() => WaitFor(Prompt);

    public void PressEnter()
    {
        _process.StandardInput.WriteLine();
        _process.StandardInput.Flush();
    }

    public int WaitForExit()
    {
        if (!_process.WaitForExit(Patience))
        {
            _process.Kill();
            throw new TimeoutException($"memcr did not exit:\n{Output}");
        }
        _process.WaitForExit();
        return _process.ExitCode;
    }

    /// <summary>
    /// Presses Enter on a checkpoint whose image was damaged: memcr must refuse to restore, say
    /// <paramref name="message"/>, and kill the target rather than let it run on dropped memory.
    /// </summary>
    public void AssertRestoreRefusedAndTargetKilled(FifoTarget target, string message)
    {
        PressEnter();
        Assert.NotEqual(0, WaitForExit());
        Assert.Contains(message, Output);
        Assert.Contains($"pid {target.Pid} was killed with SIGKILL", Output);
        Assert.True(target.WaitUntilDead(TimeSpan.FromSeconds(10)), "the target must not run on dropped memory");
    }

    public void Signal(int signal) => Assert.True(Syscalls.Kill(_process.Id, signal) == 0, $"memcr has exited already:\n{Output}");

    public void Dispose()
    {
        if (!_process.HasExited)
        {
            _process.Kill();
            _process.WaitForExit();
        }
        _process.Dispose();
    }
}
