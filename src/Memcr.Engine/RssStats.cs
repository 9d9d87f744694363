using Memcr.Linux.Proc;

namespace Memcr.Engine;

/// <summary>Resident memory of a process as /proc/PID/status reports it, in kB.</summary>
public readonly record struct RssStats(long VmRss, long RssAnon, long RssFile, long RssShmem)
{
    public static RssStats Read(int pid)
    {
        var s = ProcFs.ReadStatus(pid);
        return new RssStats(s.VmRssKb, s.RssAnonKb, s.RssFileKb, s.RssShmemKb);
    }

    /// <summary>Prints the "vm stats" block of the original memcr.</summary>
    public static void Show(Log log, RssStats a, RssStats b)
    {
        log.Info("vm stats");
        log.Info($"  VmRSS    {a.VmRss} kB -> {b.VmRss} kB (diff {a.VmRss - b.VmRss} kB)");
        if (a.RssAnon < 0)
            return; // kernel without RssAnon
        log.Info($"  RssAnon  {a.RssAnon} kB -> {b.RssAnon} kB (diff {a.RssAnon - b.RssAnon} kB)");
        log.Info($"  RssFile  {a.RssFile} kB -> {b.RssFile} kB (diff {a.RssFile - b.RssFile} kB)");
        log.Info($"  RssShmem {a.RssShmem} kB");
    }
}
