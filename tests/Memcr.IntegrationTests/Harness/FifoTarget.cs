using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using Memcr.Linux.Proc;
using Memcr.Linux.Ptrace;

namespace Memcr.IntegrationTests.Harness;

/// <summary>
/// A checkpoint target speaking the FIFO protocol of tests/targets (READY, CHECK, REPORT). It is
/// started detached with `setsid -f`, so that neither the tests nor memcr are its parent.
/// </summary>
public sealed partial class FifoTarget : IDisposable
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);
    private readonly FileStream _report;
    private readonly StreamReader _reportReader;
    private readonly FileStream _cmd;

    private FifoTarget(string dir, int pid, FileStream report, StreamReader reader, FileStream cmd)
    {
        Dir = dir;
        Pid = pid;
        _report = report;
        _reportReader = reader;
        _cmd = cmd;
    }

    public string Dir { get; }

    public int Pid { get; }

    /// <summary>Starts memtest; <paramref name="fill"/> is "random" (incompressible) or "program" (like a program's memory).</summary>
    public static FifoTarget StartMemtest(int heapMb = 64, string fill = "random")
    {
        string exe = Gcc.Build("memtest");
        return Start("memtest", dir => [exe, dir, heapMb.ToString(CultureInfo.InvariantCulture), fill]);
    }

    /// <summary>
    /// Starts lazytest (tests/targets/lazytest.c) with an <paramref name="mb"/> MiB region; its
    /// reader waits on the FIFO <c>feed</c> in <see cref="Dir"/> (<see cref="Feed"/>).
    /// <paramref name="onResume"/> "exit" or "kill": it exits or SIGKILLs itself as soon as it runs
    /// after a freeze. With <paramref name="uid"/> it runs as that user (setpriv), without root's capabilities.
    /// </summary>
    public static FifoTarget StartLazytest(int mb, string onResume = "", int? uid = null)
    {
        string exe = Gcc.Build("lazytest");
        return Start("lazytest", dir =>
        {
            MakeFifo(Path.Combine(dir, "feed"));
            string[] command = [exe, dir, mb.ToString(CultureInfo.InvariantCulture), onResume];
            if (uid is not int id)
                return command;
            const UnixFileMode All = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.OtherRead | UnixFileMode.OtherWrite;
            File.SetUnixFileMode(Path.Combine(dir, "feed"), All);
            File.SetUnixFileMode(Path.Combine(dir, "report"), All);
            File.SetUnixFileMode(Path.Combine(dir, "cmd"), All);
            File.SetUnixFileMode(dir, All | UnixFileMode.UserExecute | UnixFileMode.GroupExecute | UnixFileMode.OtherExecute);
            string user = id.ToString(CultureInfo.InvariantCulture);
            return ["setpriv", $"--reuid={user}", $"--regid={user}", "--clear-groups", .. command];
        });
    }

    /// <summary>Writes the 64 KiB lazytest's reader expects (byte i is i * 7 + 3) into its FIFO <c>feed</c>.</summary>
    public void Feed()
    {
        using var feed = FeedKeepingOpen();
    }

    /// <summary>
    /// <see cref="Feed"/>, the FIFO left open for the caller to close: a reader whose read() waits
    /// for pages nobody serves yet holds the FIFO's lock, and closing it would wait too (as would
    /// a child forked meanwhile, on its exec, were its copy the last).
    /// </summary>
    public FileStream FeedKeepingOpen()
    {
        var bytes = new byte[64 << 10];
        for (int i = 0; i < bytes.Length; i++)
            bytes[i] = (byte)(i * 7 + 3);
        var feed = new FileStream(Path.Combine(Dir, "feed"), FileMode.Open, FileAccess.Write, FileShare.ReadWrite, 1);
        feed.Write(bytes);
        return feed;
    }

    /// <summary>
    /// Starts the small, mostly idle target (tests/targets/idle.c) holding <paramref name="mb"/> MiB;
    /// with <paramref name="catchTerm"/> it handles SIGTERM (counted in its report as terms=N).
    /// </summary>
    public static FifoTarget StartIdle(int mb = 4, bool catchTerm = false)
    {
        string exe = Gcc.Build("idle");
        return Start("idle", dir => catchTerm
            ? [exe, dir, mb.ToString(CultureInfo.InvariantCulture), "catch-term"]
            : [exe, dir, mb.ToString(CultureInfo.InvariantCulture)]);
    }

    public static FifoTarget Start(string name, Func<string, string[]> command)
    {
        string dir = Repo.NewScratchDir(name);
        MakeFifo(Path.Combine(dir, "report"));
        MakeFifo(Path.Combine(dir, "cmd"));
        // O_RDWR: opening a FIFO so never blocks, whether or not the target got as far as opening it.
        var report = new FileStream(Path.Combine(dir, "report"), FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite, 1);
        var reader = new StreamReader(report);
        var cmd = new FileStream(Path.Combine(dir, "cmd"), FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite, 1);
        var psi = new ProcessStartInfo("setsid") { UseShellExecute = false };
        psi.ArgumentList.Add("-f");
        foreach (var a in command(dir))
            psi.ArgumentList.Add(a);
        using (var setsid = Process.Start(psi)!)
            setsid.WaitForExit();
        string ready = ReadLine(reader, $"{name} to report READY");
        if (!ready.StartsWith("READY ", StringComparison.Ordinal))
            throw new InvalidOperationException($"{name} said '{ready}' instead of READY");
        int pid = int.Parse(ready[6..], CultureInfo.InvariantCulture);
        return new FifoTarget(dir, pid, report, reader, cmd);
    }

    private static string ReadLine(StreamReader reader, string what)
    {
        var line = Task.Run(reader.ReadLine);
        if (!line.Wait(Patience))
            throw new TimeoutException($"timed out waiting for {what}");
        return line.Result ?? throw new InvalidOperationException($"end of file waiting for {what}");
    }

    /// <summary>Asks the target to verify all its memory; waits for <paramref name="rt"/> SIGRTMIN first.</summary>
    public Dictionary<string, string> Check(int rt = 0) => Ask($"CHECK {rt}");

    /// <summary>Sends one command line and returns the key=value pairs of the REPORT line it answers with.</summary>
    public Dictionary<string, string> Ask(string command)
    {
        Send(command);
        return Answer(command);
    }

    /// <summary>The key=value pairs of the REPORT line that answers <paramref name="command"/>, sent before (<see cref="Send"/>).</summary>
    public Dictionary<string, string> Answer(string command)
    {
        string line = ReadLine(_reportReader, $"pid {Pid} to answer {command}");
        Assert.StartsWith("REPORT ", line);
        return line[7..].Split(' ', StringSplitOptions.RemoveEmptyEntries)
            .Select(kv => kv.Split('=', 2))
            .ToDictionary(kv => kv[0], kv => kv[1]);
    }

    /// <summary>Asserts that the target verified all its memory and threads and saw no EINTR.</summary>
    public Dictionary<string, string> AssertIntact(int rt = 0)
    {
        var report = Check(rt);
        Assert.True(report["ok"] == "1", $"pid {Pid} reports damage: {string.Join(' ', report.Select(kv => kv.Key + "=" + kv.Value))}");
        return report;
    }

    /// <summary>Sends one command line without waiting for an answer.</summary>
    public void Send(string command)
    {
        _cmd.Write(System.Text.Encoding.ASCII.GetBytes(command + "\n"));
        _cmd.Flush();
    }

    public ProcStatus Status => ProcFs.ReadStatus(Pid);

    public bool IsAlive => File.Exists($"/proc/{Pid}/status") && Status.State is not ('Z' or 'X');

    public string Maps => File.ReadAllText($"/proc/{Pid}/maps");

    /// <summary>States of every thread (/proc/PID/task/*/status).</summary>
    public List<char> ThreadStates => ProcFs.ReadTasks(Pid).Select(t => ProcFs.ReadTaskStatus(Pid, t).State).ToList();

    /// <summary>Waits until the target has died (its zombie reaped or not).</summary>
    public bool WaitUntilDead(TimeSpan timeout)
    {
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed < timeout)
        {
            if (!IsAlive)
                return true;
            Thread.Sleep(20);
        }
        return !IsAlive;
    }

    public void Dispose()
    {
        Syscalls.Kill(Pid, Signals.SIGKILL);
        WaitUntilDead(TimeSpan.FromSeconds(10));
        _cmd.Dispose();
        _reportReader.Dispose();
        _report.Dispose();
        try
        {
            Directory.Delete(Dir, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    /// <summary>
    /// Asserts that the target is left checkpointed after its memcr died: every thread in a group
    /// stop (T, waiting up to 10 s for the kernel to detach them), untraced, and its memory still dropped.
    /// </summary>
    public void AssertLeftFrozen()
    {
        var sw = Stopwatch.StartNew();
        while (ThreadStates.Any(s => s != 'T') && sw.Elapsed < TimeSpan.FromSeconds(10))
            Thread.Sleep(10);
        Assert.All(ThreadStates, s => Assert.Equal('T', s));
        Assert.Equal(0, Status.TracerPid);
        Assert.True(Status.RssAnonKb < 2048, $"pid {Pid} RssAnon {Status.RssAnonKb} kB: it must still be without its memory, never having run");
    }

    public void Signal(int signal) => Assert.Equal(0, Syscalls.Kill(Pid, signal));

    public static void MakeFifo(string path)
    {
        if (mkfifo(path, 0x180) != 0)
            throw new IOException($"mkfifo {path}: errno {Marshal.GetLastPInvokeError()}");
    }

    [LibraryImport("libc", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int mkfifo(string path, uint mode);
}
