using Memcr.Linux.Kernel;

namespace Memcr.Dump;

/// <summary>memcr check: what this kernel offers that dump and restore need, and "Looks good." when it is enough.</summary>
public static class KernelCheck
{
    public static int Run(TextWriter output)
    {
        var features = KernelFeatures.Probe();
        foreach (var f in features)
            output.WriteLine($"{(f.Ok ? "ok     " : f.Required ? "MISSING" : "absent ")} {f.Name}: {f.Detail}");
        var missing = features.Where(f => f.Required && !f.Ok).ToList();
        if (missing.Count == 0)
        {
            output.WriteLine("Looks good.");
            return 0;
        }
        output.WriteLine($"Looks bad: {string.Join(", ", missing.Select(f => f.Name))} missing.");
        return 1;
    }
}
