using Memcr.Linux.Proc;

namespace Memcr.Linux.Ptrace;

/// <summary>
/// A process and all its descendants, every thread of each held in a ptrace stop. Processes are
/// seized parent first; children forked while we did so are found by listing every thread's
/// children again once all known processes are stopped, until a listing shows nothing new.
/// Like <see cref="Tracer"/>, it must be used from the thread that created it.
/// </summary>
public sealed class TreeTracer : IDisposable
{
    private readonly List<Tracer> _processes = [];
    private readonly Dictionary<int, int> _parents = [];

    private TreeTracer()
    {
    }

    /// <summary>Every process, the root first, parents before their children.</summary>
    public IReadOnlyList<Tracer> Processes => _processes;

    public Tracer Root => _processes[0];

    /// <summary>The parent of <paramref name="pid"/> in the tree (0 for the root).</summary>
    public int ParentOf(int pid) => _parents[pid];

    public Tracer this[int pid] => _processes.First(p => p.Pid == pid);

    /// <summary>
    /// Seizes <paramref name="root"/> and its descendants. A child that is a zombie cannot be
    /// seized: <paramref name="zombie"/> decides (it throws to refuse the dump).
    /// </summary>
    public static TreeTracer Seize(int root, Action<string> log, Action<int, int> zombie)
    {
        var tree = new TreeTracer();
        try
        {
            tree.Add(Tracer.Seize(root, log), 0);
            for (int round = 0; ; round++)
            {
                bool grew = false;
                for (int i = 0; i < tree._processes.Count; i++)
                {
                    var parent = tree._processes[i];
                    foreach (var thread in parent.Threads.Where(t => t.State != TraceState.Gone).ToList())
                    {
                        foreach (int child in ProcFs.ReadChildren(parent.Pid, thread.Tid))
                        {
                            if (tree._parents.ContainsKey(child))
                                continue;
                            if (ProcFs.ReadStatus(child).State is 'Z' or 'X')
                            {
                                zombie(child, parent.Pid);
                                continue;
                            }
                            tree.Add(Tracer.Seize(child, log), parent.Pid);
                            grew = true;
                        }
                    }
                }
                if (!grew)
                    return tree;
                if (round == 1000)
                    throw new InvalidOperationException($"the tree of pid {root} forks faster than it can be frozen");
            }
        }
        catch
        {
            tree.Detach();
            throw;
        }
    }

    private void Add(Tracer process, int parent)
    {
        _processes.Add(process);
        _parents[process.Pid] = parent;
    }

    /// <summary>Lets every process go on as it was.</summary>
    public void Detach()
    {
        List<Exception>? errors = null;
        foreach (var p in _processes)
        {
            try
            {
                p.Detach();
            }
            catch (Exception e) when (e is SyscallException or ProcessGoneException)
            {
                (errors ??= []).Add(e);
            }
        }
        if (errors is not null)
            throw new AggregateException("cannot release every process of the tree", errors);
    }

    /// <summary>Kills every process of the tree (after a dump, as CRIU does by default).</summary>
    public void Kill()
    {
        foreach (var p in _processes)
            p.Kill();
    }

    public void Dispose() => Detach();
}
