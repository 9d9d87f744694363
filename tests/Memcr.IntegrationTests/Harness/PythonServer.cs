using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;
using Memcr.Linux.Kernel;

namespace Memcr.IntegrationTests.Harness;

/// <summary>
/// A Python TCP program started detached in its own directory (as a user would start a server):
/// tests/targets/tcpserver.py, tcpclient.py or the fixture's webserver.py. Killed when disposed.
/// </summary>
public sealed class PythonProgram : IDisposable
{
    private PythonProgram(int pid, string dir)
    {
        Pid = pid;
        Dir = dir;
    }

    public int Pid { get; }

    public string Dir { get; }

    public string Output => Path.Combine(Dir, "out");

    /// <summary>Starts <paramref name="script"/> with <paramref name="args"/>; its pid is the shell's, which execs python.</summary>
    public static PythonProgram Start(string name, string script, params string[] args)
    {
        string dir = Repo.NewScratchDir(name);
        string pidFile = Path.Combine(dir, "pid");
        Repo.MustRun("setsid", "-f", "sh", "-c",
            $"cd {dir} && echo $$ > {pidFile} && exec python3 {script} {string.Join(' ', args)} </dev/null >{dir}/out 2>&1");
        var sw = Stopwatch.StartNew();
        while (!File.Exists(pidFile) || File.ReadAllText(pidFile).Trim().Length == 0)
        {
            if (sw.Elapsed > TimeSpan.FromSeconds(30))
                throw new TimeoutException($"{script} did not start");
            Thread.Sleep(10);
        }
        return new PythonProgram(int.Parse(File.ReadAllText(pidFile).Trim(), CultureInfo.InvariantCulture), dir);
    }

    public static string Target(string name) => Path.Combine(Repo.Root, "tests", "targets", name);

    /// <summary>tests/targets/tcpserver.py on <paramref name="port"/>, listening.</summary>
    public static PythonProgram Server(string name, int port)
    {
        var p = Start(name, Target("tcpserver.py"), port.ToString(CultureInfo.InvariantCulture));
        WaitListening(port);
        return p;
    }

    /// <summary>Waits until a TCP socket listens on 127.0.0.1:<paramref name="port"/> (without connecting to it).</summary>
    public static void WaitListening(int port)
    {
        var sw = Stopwatch.StartNew();
        while (!InetDiag.All(InetDiag.AfInet, InetDiag.Tcp).Values.Any(s => s.State == InetSocketInfo.Listen && s.SourcePort == port))
        {
            if (sw.Elapsed > TimeSpan.FromSeconds(30))
                throw new TimeoutException($"nothing listens on port {port}");
            Thread.Sleep(20);
        }
    }

    /// <summary>The TCP connections of 127.0.0.1:<paramref name="port"/> in ESTABLISHED state, seen from the port's side.</summary>
    public static List<InetSocketInfo> Connections(int port) =>
        [.. InetDiag.All(InetDiag.AfInet, InetDiag.Tcp).Values.Where(s => s.State == InetSocketInfo.Established && s.SourcePort == port)];

    public void Dispose()
    {
        Syscalls.Kill(Pid, Linux.Ptrace.Signals.SIGKILL);
        CriuRun.WaitFree(Pid);
        try
        {
            Directory.Delete(Dir, recursive: true);
        }
        catch (IOException)
        {
            // images of a dump may still be in use by a failing test's restore
        }
    }
}

/// <summary>curl against 127.0.0.1, running in the background until asked for its result.</summary>
public sealed class Curl : IDisposable
{
    private readonly Process _process;
    private readonly Task<string> _stdout;

    private Curl(Process process)
    {
        _process = process;
        _stdout = process.StandardOutput.ReadToEndAsync();
    }

    public static Curl Start(params string[] args)
    {
        var psi = new ProcessStartInfo("curl") { RedirectStandardOutput = true, RedirectStandardError = true };
        psi.ArgumentList.Add("-sS");
        foreach (var a in args)
            psi.ArgumentList.Add(a);
        return new Curl(Process.Start(psi)!);
    }

    /// <summary>Waits for curl to end: its exit code, what it printed and its errors.</summary>
    public (int Code, string Output, string Errors) Result(TimeSpan patience)
    {
        if (!_process.WaitForExit(patience))
            throw new TimeoutException($"curl did not finish in {patience.TotalSeconds} s");
        return (_process.ExitCode, _stdout.Result, _process.StandardError.ReadToEnd());
    }

    public void Dispose()
    {
        if (!_process.HasExited)
            _process.Kill();
        _process.Dispose();
    }
}

/// <summary>The nftables lock tables of CRIU mode, as `nft list tables` shows them.</summary>
public static partial class LockTables
{
    public static List<string> All() =>
        [.. NfTables.Run("list tables inet").Split('\n').Select(l => l.Trim()).Where(l => l.StartsWith("table inet CRIU-", StringComparison.Ordinal)).Select(l => l[11..])];

    /// <summary>The lock table a dump in <paramref name="images"/> is locked with (named after its run id, as CRIU names it).</summary>
    public static string Of(string images)
    {
        var (code, json) = MemcrProcess.Run("crit", "decode", "-i", Path.Combine(images, "inventory.img"));
        Assert.True(code == 0, json);
        string runId = RunId().Match(json).Groups[1].Value;
        return "CRIU-" + runId[..21];
    }

    [GeneratedRegex("\"dump_criu_run_id\": \"([0-9a-f-]+)\"")]
    private static partial Regex RunId();
}
