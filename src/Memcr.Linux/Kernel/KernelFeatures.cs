using System.Net.Sockets;
using Memcr.Linux.Memory;
using Memcr.Linux.Proc;

namespace Memcr.Linux.Kernel;

/// <summary>One thing dump or restore needs from the kernel: whether this one offers it, and if not why.</summary>
public sealed record KernelFeature(string Name, bool Ok, string Detail, bool Required);

/// <summary>Probes of what this kernel, and memcr's privileges on it, offer CRIU mode.</summary>
public static class KernelFeatures
{
    private const int CapKill = 5, CapSetgid = 6, CapSetuid = 7, CapNetAdmin = 12, CapSysPtrace = 19, CapSysAdmin = 21, CapSysResource = 24, CapCheckpointRestore = 40;

    /// <summary>Whether we have one capability.</summary>
    public static bool Has(int cap) => (ProcFs.ReadStatus(Environment.ProcessId).CapEff & (1UL << cap)) != 0;

    public const int SysPtrace = CapSysPtrace, SysAdmin = CapSysAdmin, CheckpointRestore = CapCheckpointRestore, NetAdmin = CapNetAdmin;

    public static List<KernelFeature> Probe()
    {
        var list = new List<KernelFeature>();
        var release = Release();
        var status = ProcFs.ReadStatus(Environment.ProcessId);
        bool Cap(int c) => (status.CapEff & (1UL << c)) != 0;
        list.Add(new("kernel", release >= new Version(5, 9), $"Linux {Environment.OSVersion.Version} (5.9 or newer needed: clone3 with set_tid, close_range, pidfd_getfd)", true));
        list.Add(Feature("clone3 with set_tid", release >= new Version(5, 5) && (Cap(CapCheckpointRestore) || Cap(CapSysAdmin)),
            Cap(CapCheckpointRestore) || Cap(CapSysAdmin) ? "restore can choose the pids" : "needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN", true));
        list.Add(Feature("pidfd_getfd", PidfdGetfd(out string pidfd), pidfd, true));
        list.Add(Feature("PAGEMAP_SCAN", PagemapScan(), "without it pages are found through /proc/PID/pagemap, more slowly", false));
        list.Add(Feature("rseq configuration (PTRACE_GET_RSEQ_CONFIGURATION)", release >= new Version(5, 13), "Linux 5.13 or newer", true));
        list.Add(Feature("/proc/PID/task/TID/children", File.Exists($"/proc/self/task/{Environment.ProcessId}/children"), "the kernel needs CONFIG_PROC_CHILDREN", true));
        list.Add(Feature("/proc/PID/map_files", Directory.Exists("/proc/self/map_files"), "the kernel needs CONFIG_CHECKPOINT_RESTORE", true));
        list.Add(Feature("TCP_REPAIR", TcpRepair(out string tcp), tcp, false));
        list.Add(Feature("userfaultfd", Userfaultfd(out string uffd), uffd, false));
        foreach (var (cap, what) in new[] { (CapSysPtrace, "CAP_SYS_PTRACE (freeze and inspect processes)"), (CapSysAdmin, "CAP_SYS_ADMIN (map_files, prctl(PR_SET_MM))"),
                     (CapKill, "CAP_KILL"), (CapSetuid, "CAP_SETUID"), (CapSetgid, "CAP_SETGID") })
            list.Add(Feature(what.Split(' ')[0], Cap(cap), what, true));
        list.Add(Feature("CAP_SYS_RESOURCE", Cap(CapSysResource), "CAP_SYS_RESOURCE (only to restore hard resource limits above memcr's own)", false));
        list.Add(Feature("CAP_NET_ADMIN", Cap(CapNetAdmin), "CAP_NET_ADMIN (TCP repair of established connections)", false));
        string scope = File.Exists("/proc/sys/kernel/yama/ptrace_scope") ? File.ReadAllText("/proc/sys/kernel/yama/ptrace_scope").Trim() : "0";
        list.Add(Feature("ptrace", scope != "3", $"yama ptrace_scope {scope}" + (scope == "3" ? ": ptrace is disabled" : ""), true));
        return list;
    }

    private static KernelFeature Feature(string name, bool ok, string detail, bool required) => new(name, ok, detail, required);

    private static Version Release()
    {
        string r = File.ReadAllText("/proc/sys/kernel/osrelease").Trim();
        var parts = r.Split('.', '-');
        return new Version(int.Parse(parts[0], System.Globalization.CultureInfo.InvariantCulture), int.Parse(parts[1], System.Globalization.CultureInfo.InvariantCulture));
    }

    private static bool PidfdGetfd(out string detail)
    {
        try
        {
            using var pidfd = ProcessCalls.PidfdOpen(Environment.ProcessId);
            using var fd = ProcessCalls.TakeFd(pidfd, Environment.ProcessId, 0);
            detail = "restore hands files to the processes it makes";
            return true;
        }
        catch (SyscallException e)
        {
            detail = e.Message;
            return false;
        }
    }

    private static bool PagemapScan()
    {
        try
        {
            using var scanner = new PagemapScanner(Environment.ProcessId);
            var maps = ProcFs.ReadMaps(Environment.ProcessId);
            var stack = maps.First(v => v.IsStack);
            scanner.Scan(stack.Start, stack.End);
            return scanner.UsesScanIoctl;
        }
        catch (Exception e) when (e is SyscallException or InvalidOperationException)
        {
            return false;
        }
    }

    private static bool TcpRepair(out string detail)
    {
        try
        {
            using var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            s.SetRawSocketOption(6 /* SOL_TCP */, 19 /* TCP_REPAIR */, BitConverter.GetBytes(1));
            detail = "established TCP connections can be dumped and restored";
            return true;
        }
        catch (SocketException e)
        {
            detail = $"setsockopt(TCP_REPAIR): {e.Message}";
            return false;
        }
    }

    private static bool Userfaultfd(out string detail)
    {
        try
        {
            Memory.UserFaultFd.Create(0x80000 /* O_CLOEXEC */, "memcr").Dispose();
        }
        catch (SyscallException e)
        {
            detail = $"userfaultfd(): {SyscallException.Describe(e.Errno)}";
            return false;
        }
        detail = "lazy restore can serve pages on demand";
        return true;
    }
}
