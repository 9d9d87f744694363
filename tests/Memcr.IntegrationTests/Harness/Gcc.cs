namespace Memcr.IntegrationTests.Harness;

/// <summary>Compiles the C targets of tests/targets once per test run.</summary>
public static class Gcc
{
    private static readonly Dictionary<string, string> Built = [];
    private static readonly Lock Sync = new();
    private static readonly string OutDir = Path.Combine(Path.GetTempPath(), $"memcr-targets-{Environment.ProcessId}");

    public static string Build(string name)
    {
        lock (Sync)
        {
            if (Built.TryGetValue(name, out var exe))
                return exe;
            Directory.CreateDirectory(OutDir);
            exe = Path.Combine(OutDir, name);
            Repo.MustRun("gcc", "-O2", "-g", "-pthread", "-Wall", "-Werror", "-o", exe, Path.Combine(Repo.Root, "tests", "targets", name + ".c"));
            Built[name] = exe;
            return exe;
        }
    }
}
