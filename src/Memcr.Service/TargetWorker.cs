using System.Collections.Concurrent;
using Memcr.Client;
using Memcr.Engine;
using Memcr.Engine.Lazy;
using Memcr.Linux.Proc;

namespace Memcr.Service;

/// <summary>
/// One process the service holds, on a thread of its own: the thread that seizes a process is its
/// tracer, and one slow or failing target never holds up another. It checkpoints (or takes over a
/// process a dead memcr left frozen), then watches the frozen process until a restore comes or the
/// process dies.
/// </summary>
internal sealed class TargetWorker : IDisposable
{
    private readonly CheckpointOptions _options;
    private readonly Log _log;
    private readonly TimeSpan? _timeout;
    private readonly JournalEntry? _adopt;
    private readonly bool _persistentKey;
    private readonly Action<TargetWorker> _gone;
    private readonly CancellationTokenSource _abort = new();
    private readonly BlockingCollection<TaskCompletionSource<MemcrResponse>> _restores = [];
    private readonly TaskCompletionSource<MemcrResponse> _checkpointed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _ended = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private volatile string _state;
    private LazyMode _lazy;

    private TargetWorker(CheckpointOptions options, Log log, TimeSpan? timeout, JournalEntry? adopt, bool persistentKey, Action<TargetWorker> gone)
    {
        _options = options;
        _log = log;
        _timeout = timeout;
        _adopt = adopt;
        _persistentKey = persistentKey;
        _gone = gone;
        _state = adopt is null ? "checkpointing" : "taking over";
        _lazy = options.Lazy;
        Since = adopt?.Since ?? DateTimeOffset.UtcNow;
    }

    public int Pid => _options.Pid;

    /// <summary>checkpointing, checkpointed, restoring, "restoring lazily" once the process runs (or "taking over" for a process found in the journal).</summary>
    public string State => _state;

    public DateTimeOffset Since { get; private set; }

    /// <summary>Its process runs again and its pages are coming back (a lazy restore).</summary>
    public bool Serving => _state == "restoring lazily";

    public bool Adopted => _adopt is not null;

    public JournalEntry? Entry { get; private set; }

    /// <summary>The answer to the checkpoint request (for taken-over processes: whether the take-over worked).</summary>
    public Task<MemcrResponse> Checkpointed => _checkpointed.Task;

    /// <summary>Completes when the worker has let go of its process (restored, failed or gone).</summary>
    public Task Ended => _ended.Task;

    public static TargetWorker Checkpoint(CheckpointOptions options, Log log, TimeSpan? timeout, bool persistentKey, Action<TargetWorker> gone)
    {
        var w = new TargetWorker(options, log, timeout, null, persistentKey, gone);
        w.Start();
        return w;
    }

    public static TargetWorker TakeOver(CheckpointOptions options, JournalEntry entry, Log log, Action<TargetWorker> gone)
    {
        var w = new TargetWorker(options, log, null, entry, entry.PersistentKey, gone) { Entry = entry };
        w.Start();
        return w;
    }

    private void Start()
    {
        new Thread(Run) { Name = $"memcr pid {Pid}", IsBackground = true }.Start();
    }

    /// <summary>
    /// Asks for the process's memory back. During a checkpoint this aborts it (the process is left
    /// running as it was, which is what the restore asked for).
    /// </summary>
    public async Task<MemcrResponse> RestoreAsync()
    {
        if (!_checkpointed.Task.IsCompleted)
        {
            _log.Info("restore requested while the checkpoint is running: aborting the checkpoint");
            try
            {
                await _abort.CancelAsync().ConfigureAwait(false);
            }
            catch (ObjectDisposedException)
            {
                // The worker ended meanwhile.
            }
        }
        if (await _checkpointed.Task.ConfigureAwait(false) != MemcrResponse.Ok)
            return _adopt is null ? MemcrResponse.Ok : MemcrResponse.Error; // never checkpointed: it runs on its own memory
        var done = new TaskCompletionSource<MemcrResponse>(TaskCreationOptions.RunContinuationsAsynchronously);
        try
        {
            _restores.Add(done);
        }
        catch (Exception e) when (e is InvalidOperationException or ObjectDisposedException)
        {
            return MemcrResponse.Error; // the process is gone meanwhile
        }
        return await done.Task.ConfigureAwait(false);
    }

    private void Run()
    {
        CheckpointSession? session = null;
        try
        {
            if (_adopt is { Lazy: true })
            {
                TakeOverLazy(_adopt);
                return;
            }
            session = _adopt is null ? DoCheckpoint() : DoTakeOver();
            if (session is null)
                return;
            _state = "checkpointed";
            _checkpointed.SetResult(MemcrResponse.Ok);
            Watch(session);
        }
        catch (Exception e)
        {
            // Never take the whole service down: this process is given back (Watch disposes its
            // session, which restores it) or was never touched.
            _log.Error($"internal error: {e}");
        }
        finally
        {
            // Out of the service's table before any answer goes out: a client that checkpoints
            // again right after its answer must not find this worker still there.
            _gone(this);
            _restores.CompleteAdding();
            while (_restores.TryTake(out var late))
                late.TrySetResult(MemcrResponse.Error);
            _checkpointed.TrySetResult(MemcrResponse.Error);
            _ended.TrySetResult();
            Dispose();
        }
    }

    public void Dispose()
    {
        _abort.Dispose();
        _restores.Dispose();
    }

    private CheckpointSession? DoCheckpoint()
    {
        if (_lazy != LazyMode.Off && LazyRestore.Refusal(Pid) is { } refusal)
        {
            if (_lazy == LazyMode.On)
            {
                _log.Error($"checkpoint refused: --lazy: {refusal}; nothing was done (--lazy=auto restores such a process eagerly)");
                return null;
            }
            _log.Info($"{refusal}: its restore will be eager");
            _lazy = LazyMode.Off;
        }
        using var timeout = _timeout is { } t ? new CancellationTokenSource(t) : new CancellationTokenSource();
        using var cancel = CancellationTokenSource.CreateLinkedTokenSource(_abort.Token, timeout.Token);
        var options = _options with { BeforeDrop = WriteJournal };
        try
        {
            var session = CheckpointSession.Checkpoint(options, _log, cancel.Token);
            if (Entry is { } entry)
            {
                // The entry written before the drop is enough to take the process over; this one
                // only adds the RSS given back, so failing to write it loses nothing.
                Entry = entry with { RssSavedKb = session.Before.VmRss - session.After.VmRss };
                try
                {
                    Journal.Write(_options.DumpDir, Entry);
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                    _log.Error($"cannot update its journal entry: {e.Message}");
                }
            }
            return session;
        }
        catch (OperationCanceledException)
        {
            _log.Error(timeout.IsCancellationRequested
                ? $"checkpoint timed out after {_timeout!.Value.TotalSeconds:0.###} s: abandoned, the process was left running untouched"
                : "checkpoint aborted by a restore request: the process was left running untouched");
        }
        catch (Exception e) when (e is CheckpointException or IOException or UnauthorizedAccessException)
        {
            _log.Error(e.Message);
        }
        Journal.Delete(_options.DumpDir, Pid);
        return null;
    }

    private void WriteJournal(CheckpointSession s)
    {
        var entry = JournalEntry.Of(s, _options, _persistentKey, Since);
        Journal.Write(_options.DumpDir, entry);
        Entry = entry;
    }

    private CheckpointSession? DoTakeOver()
    {
        var entry = _adopt!;
        if (entry.Encryption != Image.Encryption.None && !entry.PersistentKey)
            _log.Error("its image is encrypted with a random key that died with the previous memcr: restoring it will fail and kill it");
        try
        {
            var session = CheckpointSession.Adopt(_options, entry.ImageId, _log);
            _log.Info($"taken over: frozen since {entry.Since:u}, image {entry.Image}");
            return session;
        }
        catch (CheckpointException e)
        {
            _log.Error($"cannot take it over: {e.Message}");
            return null;
        }
    }

    private void Watch(CheckpointSession session)
    {
        using (session)
        {
            while (true)
            {
                if (_restores.TryTake(out var request, 100))
                {
                    _state = "restoring";
                    var result = MemcrResponse.Error;
                    LazySession? lazy = null;
                    try
                    {
                        if (_lazy != LazyMode.Off)
                            lazy = RestoreLazily(session);
                        else
                            session.Restore();
                        result = MemcrResponse.Ok;
                    }
                    catch (TargetTerminatedException e)
                    {
                        // A terminating signal came with the request: the process died of it, as the
                        // original reports a target that died while held.
                        _log.Info($"{e.Message}; image removed");
                    }
                    catch (Exception e) when (e is CheckpointException or IOException or UnauthorizedAccessException or InvalidOperationException)
                    {
                        _log.Error(e.Message);
                    }
                    if (lazy is not null)
                    {
                        // It runs: the answer goes out now, and the pages keep coming back.
                        request.SetResult(result);
                        Serve(lazy);
                        return;
                    }
                    Journal.Delete(_options.DumpDir, Pid);
                    _gone(this);
                    request.SetResult(result);
                    return;
                }
                try
                {
                    session.Poll();
                }
                catch (TargetTerminatedException e)
                {
                    _log.Info($"{e.Message}; image removed");
                    Journal.Delete(_options.DumpDir, Pid);
                    return;
                }
            }
        }
    }

    /// <summary>Resumes the process with its pages on demand; null when it was restored eagerly instead (or had nothing dropped).</summary>
    private LazySession? RestoreLazily(CheckpointSession session)
    {
        void Journaled(int fd)
        {
            try
            {
                Entry = (Entry ?? JournalEntry.Of(session, _options, _persistentKey, Since)) with { LazyFd = fd };
                Journal.Write(_options.DumpDir, Entry);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or ProcessGoneException)
            {
                _log.Error($"cannot journal its lazy restore: {e.Message}; should this service die, nothing could finish it");
            }
        }
        try
        {
            return session.RestoreLazily(Journaled);
        }
        catch (LazyRestoreUnavailableException e)
        {
            _log.Error($"{e.Message}; restoring eagerly");
            session.Restore();
            return null;
        }
    }

    /// <summary>
    /// Serves a lazy restore until every page is back: the process runs meanwhile, so any further
    /// restore request for it is answered at once.
    /// </summary>
    private void Serve(LazySession lazy)
    {
        _state = "restoring lazily";
        using (lazy)
        {
            try
            {
                while (!lazy.Filled(100))
                {
                    while (_restores.TryTake(out var late))
                        late.TrySetResult(MemcrResponse.Ok);
                }
                var took = lazy.WaitFilled();
                if (lazy.TargetAlive)
                    _log.Info($"restore complete: {lazy.TotalBytes >> 20} MiB in {(long)took.TotalMilliseconds} ms, {lazy.PagesOnDemand} pages on demand");
                else
                    _log.Info("it has gone during its lazy restore; image removed");
            }
            catch (Exception e) when (e is Image.ImageFormatException or IOException)
            {
                // Finish kills it and says why.
            }
            finally
            {
                lazy.Finish();
                Journal.Delete(_options.DumpDir, Pid);
            }
        }
    }

    /// <summary>Finishes the lazy restore of a process whose memcr died with it (found in the journal).</summary>
    private void TakeOverLazy(JournalEntry entry)
    {
        LazySession lazy;
        try
        {
            lazy = LazySession.TakeOver(_options, entry.ImageId, entry.LazyFd, _log);
        }
        catch (CheckpointException e)
        {
            _log.Error($"{e.Message}; its threads that need pages not yet back wait for them");
            return;
        }
        _checkpointed.SetResult(MemcrResponse.Ok);
        Serve(lazy);
    }
}
