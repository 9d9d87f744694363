using Memcr.Linux;
using Memcr.Linux.Arch;
using Memcr.Linux.Memory;
using Memcr.Linux.Proc;
using Memcr.Linux.Ptrace;

namespace Memcr.Engine;

/// <summary>
/// The drop: madvise(MADV_DONTNEED) over the spans a checkpoint saved, run in the target. Freeing
/// a GiB of pages is about 40 ms of kernel work in the target's context; in a target with several
/// threads, others take a large contiguous share each while the leader drops the rest, on their
/// own CPUs at the same time (two threads here: about two thirds of the time).
/// <para>
/// A helper makes exactly one call: between two remote calls a thread passes through user mode,
/// and on that way the kernel may write into the thread's rseq area (its CPU number, when the
/// thread moved), a page that may already be dropped. It would come back as a fresh page holding
/// little more than that number, which a lazy restore then leaves as it is. The leader, which
/// makes the other calls, stays on this thread's CPU throughout (see <see cref="RemoteSyscall"/>).
/// </para>
/// </summary>
internal static class MemoryDrop
{
    /// <summary>A share smaller than this is not worth another thread's ptrace round trips.</summary>
    private const ulong MinShare = 64UL << 20;

    /// <summary>Freeing pages contends on the memory cgroup's LRU lock: more threads than this gain nothing.</summary>
    private const int MaxThreads = 4;

    /// <summary>
    /// Shares address-ordered spans among the leader and up to <paramref name="threads"/> - 1
    /// helpers: each helper one contiguous range of about an equal share, cut from the largest
    /// spans; the leader everything else, in address order.
    /// </summary>
    public static (List<(ulong Start, ulong End)> Leader, List<(ulong Start, ulong End)> Helpers) Share(
        IReadOnlyList<(ulong Start, ulong End)> spans, int threads)
    {
        ulong total = spans.Aggregate(0UL, (sum, s) => sum + (s.End - s.Start));
        int n = (int)Math.Clamp(total / MinShare, 1, (ulong)Math.Clamp(threads, 1, MaxThreads));
        var helpers = new List<(ulong Start, ulong End)>();
        if (n == 1)
            return (spans.ToList(), helpers);
        ulong each = total / (ulong)n / MinShare * MinShare;
        var rest = spans.ToList();
        while (helpers.Count < n - 1)
        {
            int largest = 0;
            for (int i = 1; i < rest.Count; i++)
            {
                if (rest[i].End - rest[i].Start > rest[largest].End - rest[largest].Start)
                    largest = i;
            }
            var (start, end) = rest[largest];
            if (end - start < MinShare)
                break;
            // The top of the span goes to the helper; what is left of it stays in place.
            ulong cut = end - Math.Min(each, end - start);
            helpers.Add((cut, end));
            if (cut == start)
                rest.RemoveAt(largest);
            else
                rest[largest] = (start, cut);
        }
        return (rest, helpers);
    }

    /// <summary>
    /// Drops every span: the helpers' shares on threads left on their CPUs, the leader's, call by
    /// call, on this one meanwhile. Calls <paramref name="dropping"/> before the first madvise;
    /// gives the number of madvise calls. A failed madvise is reported once every thread is back.
    /// </summary>
    public static int Run(Tracer tracer, CpuArchitecture arch, ulong instruction, IReadOnlyList<(ulong Start, ulong End)> spans, Action dropping)
    {
        var threads = Helpers(tracer, Math.Min(Environment.ProcessorCount, MaxThreads) - 1);
        var (own, shares) = Share(spans, threads.Count + 1);
        var remotes = new List<RemoteSyscall>(shares.Count + 1);
        SyscallException? failed = null;
        int calls = 0;
        Exception? closing = null;
        try
        {
            for (int i = 0; i < shares.Count; i++)
                remotes.Add(RemoteSyscall.Open(tracer, arch, instruction, threads[i], pin: false));
            var leader = RemoteSyscall.Open(tracer, arch, instruction);
            remotes.Add(leader);
            dropping();
            for (int i = 0; i < shares.Count; i++)
                remotes[i].Start(arch.Syscalls.Madvise, shares[i].Start, shares[i].End - shares[i].Start, Madvise.DontNeed);
            foreach (var span in own)
            {
                if (failed is not null)
                    break;
                Check(leader.Call(arch.Syscalls.Madvise, span.Start, span.End - span.Start, Madvise.DontNeed), span);
            }
            for (int i = 0; i < shares.Count; i++)
                Check(remotes[i].Finish(), shares[i]);
        }
        finally
        {
            closing = Close(remotes);
        }
        // An error on the way out must not hide the one that brought us here; after a failed madvise, that one counts.
        if (closing is not null && failed is null)
            throw closing;
        if (failed is not null)
            throw failed;
        return calls;

        void Check(long r, (ulong Start, ulong End) span)
        {
            calls++;
            if (r < 0)
                failed ??= new SyscallException("madvise(MADV_DONTNEED) in the target", $"pid {tracer.Pid} [{span.Start:x}-{span.End:x}]", (int)-r);
        }
    }

    /// <summary>
    /// Up to <paramref name="count"/> threads besides the leader that may run the madvise as
    /// safely as it does: under the same seccomp filters (the same mode and number of them, which
    /// only grow), so that no filter a thread added for itself can kill the process over it.
    /// </summary>
    private static List<int> Helpers(Tracer tracer, int count)
    {
        var helpers = new List<int>();
        if (count <= 0)
            return helpers;
        try
        {
            var leader = ProcFs.ReadStatus(tracer.Pid);
            foreach (var t in tracer.Threads)
            {
                if (helpers.Count == count)
                    break;
                if (t.Tid == tracer.Pid || t.State == TraceState.Gone)
                    continue;
                var status = ProcFs.ReadTaskStatus(tracer.Pid, t.Tid);
                if (status.Seccomp == leader.Seccomp && status.SeccompFilters == leader.SeccompFilters)
                    helpers.Add(t.Tid);
            }
        }
        catch (Exception e) when (e is IOException or ProcessGoneException)
        {
            // A thread that went away takes no share; the leader can do it all.
        }
        return helpers;
    }

    /// <summary>Puts every thread back (the leader, pinned with this thread, last); the first error, if any.</summary>
    private static Exception? Close(List<RemoteSyscall> remotes)
    {
        Exception? first = null;
        foreach (var remote in remotes)
        {
            try
            {
                remote.Dispose();
            }
            catch (Exception e)
            {
                first ??= e;
            }
        }
        return first;
    }
}
