using System.Diagnostics;

namespace Memcr.IntegrationTests.Harness;

/// <summary>Paths of the repository and of what the tests run.</summary>
public static class Repo
{
    public static string Root { get; } = FindRoot();

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "memcr.slnx")))
                return dir.FullName;
        }
        throw new InvalidOperationException($"memcr.slnx not found above {AppContext.BaseDirectory}");
    }

    /// <summary>The memcr binary under test: $MEMCR_BIN, else the NativeAOT build of ./build.sh.</summary>
    public static string Memcr
    {
        get
        {
            string path = Environment.GetEnvironmentVariable("MEMCR_BIN") ?? Path.Combine(Root, "artifacts", "bin", "memcr");
            if (!File.Exists(path))
                throw new InvalidOperationException($"{path} does not exist: run ./build.sh first (or set MEMCR_BIN)");
            return path;
        }
    }

    /// <summary>The memcr-client binary built by ./build.sh, next to memcr.</summary>
    public static string MemcrClient => Path.Combine(Path.GetDirectoryName(Memcr)!, "memcr-client");

    /// <summary>Scratch space on a disk-backed file system (/tmp may be tmpfs elsewhere), removed when the test run ends.</summary>
    public static string NewScratchDir(string name) => ScratchDirs.New("/var/tmp", "memcr-it", name);

    /// <summary>Runs a command to completion; returns exit code and combined output.</summary>
    public static (int ExitCode, string Output) Run(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args)
            psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync();
        string stdout = p.StandardOutput.ReadToEnd();
        if (!p.WaitForExit(TimeSpan.FromMinutes(5)))
        {
            p.Kill(entireProcessTree: true);
            throw new TimeoutException($"{file} {string.Join(' ', args)} did not finish");
        }
        return (p.ExitCode, stdout + stderr.Result);
    }

    public static void MustRun(string file, params string[] args)
    {
        var (code, output) = Run(file, args);
        if (code != 0)
            throw new InvalidOperationException($"{file} {string.Join(' ', args)} failed ({code}): {output}");
    }
}
