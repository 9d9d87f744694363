using System.Diagnostics;
using System.Text.RegularExpressions;
using Memcr.IntegrationTests.Harness;
using Xunit.Abstractions;

namespace Memcr.IntegrationTests;

/// <summary>
/// The arm64 build on a real arm64 kernel: tests/arm64/run-vm.sh boots Debian's arm64 Linux in
/// qemu with artifacts/bin/linux-arm64 (./build.sh --arch arm64) and the targets cross-compiled,
/// and tests/arm64/init.sh runs the scenarios there, one result line each. Booted once for all.
/// </summary>
public sealed partial class Arm64Vm
{
    public Arm64Vm()
    {
        var psi = new ProcessStartInfo("bash", [Path.Combine(Repo.Root, "tests", "arm64", "run-vm.sh")])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
        };
        using var p = Process.Start(psi)!;
        p.StandardInput.Close();
        var stderr = p.StandardError.ReadToEndAsync();
        Console = p.StandardOutput.ReadToEnd();
        if (!p.WaitForExit(TimeSpan.FromMinutes(12)))
        {
            p.Kill(entireProcessTree: true);
            throw new TimeoutException("the arm64 VM ran for more than 12 minutes");
        }
        Console += stderr.Result;
        ExitCode = p.ExitCode;
        foreach (Match m in ResultLine().Matches(Console))
            Results[m.Groups[1].Value] = m.Groups[2].Value;
    }

    /// <summary>What the VM printed (the kernel's messages, the scenarios' lines), and run-vm.sh's errors.</summary>
    public string Console { get; }

    public int ExitCode { get; }

    /// <summary>Each scenario's "PASS ..." or "FAIL ..." line.</summary>
    public Dictionary<string, string> Results { get; } = [];

    public string Tail => string.Join('\n', Console.Split('\n').TakeLast(40));

    [GeneratedRegex(@"^ARM64-RESULT (\S+) (.*?)\r?$", RegexOptions.Multiline)]
    private static partial Regex ResultLine();
}

public sealed class Arm64VmTests(Arm64Vm vm, ITestOutputHelper output) : IClassFixture<Arm64Vm>
{
    public static readonly TheoryData<string> Scenarios =
    [
        "plain", "file-pages", "proc-mem", "zce", "lazy", "incremental-refused", "signals", "blocked-read", "restart-sleep", "sigsuspend", "killed", "damaged", "service", "criu-refused",
    ];

    [Theory]
    [MemberData(nameof(Scenarios))]
    public void Scenario_PassesOnArm64(string scenario)
    {
        Assert.True(vm.Results.TryGetValue(scenario, out var line), $"the arm64 VM gave no result for {scenario} (run-vm.sh exit {vm.ExitCode}):\n{vm.Tail}");
        output.WriteLine($"{scenario}: {line}");
        Assert.True(line.StartsWith("PASS ", StringComparison.Ordinal), $"{scenario} on arm64: {line}");
    }

    [Fact]
    public void TheVm_RanToItsEnd_WithNoOtherScenario()
    {
        Assert.True(vm.ExitCode == 0, $"run-vm.sh exit {vm.ExitCode}:\n{vm.Tail}");
        Assert.Contains("ARM64-KERNEL 6.", vm.Console);
        Assert.Equal(Scenarios.Select((object[] s) => (string)s[0]).Order(), vm.Results.Keys.Order());
    }
}
