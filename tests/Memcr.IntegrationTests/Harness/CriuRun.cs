using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;

namespace Memcr.IntegrationTests.Harness;

/// <summary>memcr dump and restore as a user types them, and what the tests check around them.</summary>
public static class CriuRun
{
    private static string P(int pid) => pid.ToString(CultureInfo.InvariantCulture);

    public static (int Code, string Output) Dump(int pid, string dir, params string[] extra) =>
        MemcrProcess.Run(["dump", "-t", P(pid), "-D", dir, "-v3", .. extra]);

    /// <summary>memcr restore -d (the tree runs on its own once memcr exits).</summary>
    public static (int Code, string Output) Restore(string dir, params string[] extra) =>
        MemcrProcess.Run(["restore", "-D", dir, "-d", "-v3", .. extra]);

    public static void MustDump(int pid, string dir, params string[] extra)
    {
        var (code, output) = Dump(pid, dir, extra);
        Assert.True(code == 0, $"memcr dump -t {pid} failed ({code}):\n{output}");
    }

    public static void MustRestore(string dir, params string[] extra)
    {
        var (code, output) = Restore(dir, extra);
        Assert.True(code == 0, $"memcr restore -D {dir} failed ({code}):\n{output}");
    }

    /// <summary>Waits until no process or thread has these ids: a dumped tree's zombies go once their parent (often init) reaps them.</summary>
    public static void WaitFree(params int[] ids)
    {
        var sw = Stopwatch.StartNew();
        while (ids.Any(id => Directory.Exists($"/proc/{id}")))
        {
            if (sw.Elapsed > TimeSpan.FromSeconds(30))
                throw new TimeoutException($"pids {string.Join(' ', ids.Where(id => Directory.Exists($"/proc/{id}")))} are still in use");
            Thread.Sleep(20);
        }
    }

    /// <summary>Waits until <paramref name="pid"/> exists and is not stopped by a tracer.</summary>
    public static void WaitRunning(int pid)
    {
        var sw = Stopwatch.StartNew();
        while (!File.Exists($"/proc/{pid}/status") || !File.ReadAllText($"/proc/{pid}/status").Contains("TracerPid:\t0", StringComparison.Ordinal))
        {
            if (sw.Elapsed > TimeSpan.FromSeconds(30))
                throw new TimeoutException($"pid {pid} is not running");
            Thread.Sleep(20);
        }
    }

    /// <summary>The thread ids of a process.</summary>
    public static List<int> Tids(int pid) =>
        Directory.GetDirectories($"/proc/{pid}/task").Select(d => int.Parse(Path.GetFileName(d), CultureInfo.InvariantCulture)).Order().ToList();

    /// <summary>A fingerprint of every file of a directory (names, sizes, contents): a failed restore must leave the images as they were.</summary>
    public static string Fingerprint(string dir)
    {
        using var sha = SHA256.Create();
        foreach (var f in Directory.GetFiles(dir).Order(StringComparer.Ordinal))
        {
            var name = System.Text.Encoding.UTF8.GetBytes(Path.GetFileName(f));
            sha.TransformBlock(name, 0, name.Length, null, 0);
            var data = File.ReadAllBytes(f);
            sha.TransformBlock(data, 0, data.Length, null, 0);
        }
        sha.TransformFinalBlock([], 0, 0);
        return Convert.ToHexString(sha.Hash!);
    }

    /// <summary>A line of /proc/PID/status.</summary>
    public static string Status(int pid, string key) =>
        File.ReadAllLines($"/proc/{pid}/status").First(l => l.StartsWith(key + ":", StringComparison.Ordinal))[(key.Length + 1)..].Trim();

    /// <summary>Waits until a file has a line that <paramref name="match"/> accepts; returns the lines.</summary>
    public static string[] WaitForLine(string path, Func<string, bool> match) => WaitForLines(path, lines => lines.Any(match));

    /// <summary>Waits until the lines of a file satisfy <paramref name="done"/>; returns them.</summary>
    public static string[] WaitForLines(string path, Func<string[], bool> done)
    {
        var sw = Stopwatch.StartNew();
        while (true)
        {
            var lines = File.Exists(path) ? File.ReadAllLines(path) : [];
            if (done(lines))
                return lines;
            if (sw.Elapsed > TimeSpan.FromSeconds(30))
                throw new TimeoutException($"{path} never got the expected lines:\n{string.Join('\n', lines.TakeLast(10))}");
            Thread.Sleep(50);
        }
    }

    /// <summary>The processes whose working directory is <paramref name="dir"/>.</summary>
    public static List<int> ProcessesIn(string dir)
    {
        var found = new List<int>();
        foreach (var d in Directory.GetDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(d), NumberStyles.None, CultureInfo.InvariantCulture, out int pid))
                continue;
            try
            {
                if (new DirectoryInfo(Path.Combine(d, "cwd")).LinkTarget == dir)
                    found.Add(pid);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // it ended, or is a kernel thread
            }
        }
        return found;
    }

    /// <summary>Kills what a test left running in its directory (a failed assertion must not leave a job behind).</summary>
    public static void KillEverythingIn(string dir)
    {
        foreach (int pid in ProcessesIn(dir))
            Syscalls.Kill(pid, Linux.Ptrace.Signals.SIGKILL);
    }

    /// <summary>Builds a C program of the CRIU fixtures (tests/fixtures/criu-images/programs) into <paramref name="dir"/>.</summary>
    public static string BuildProgram(string name, string dir)
    {
        string exe = Path.Combine(dir, name);
        Repo.MustRun("gcc", "-O2", "-pthread", "-o", exe, Path.Combine(Repo.Root, "tests", "fixtures", "criu-images", "programs", name + ".c"));
        return exe;
    }
}
