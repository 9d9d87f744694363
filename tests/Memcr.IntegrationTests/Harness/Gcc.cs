namespace Memcr.IntegrationTests.Harness;

/// <summary>Compiles the C targets of tests/targets once per test run.</summary>
public static class Gcc
{
    private static readonly Dictionary<string, string> Built = [];
    private static readonly Lock Sync = new();
    private static string? _outDir;

    public static string Build(string name)
    {
        lock (Sync)
        {
            if (Built.TryGetValue(name, out var exe))
                return exe;
            _outDir ??= ScratchDirs.New(Path.GetTempPath(), "memcr-targets", "gcc");
            exe = Path.Combine(_outDir, name);
            Repo.MustRun("gcc", "-O2", "-g", "-pthread", "-Wall", "-Werror", "-o", exe, Path.Combine(Repo.Root, "tests", "targets", name + ".c"));
            Built[name] = exe;
            return exe;
        }
    }
}
