using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using Memcr.Client;
using Memcr.Engine;
using Memcr.Image;
using Memcr.Linux;
using Memcr.Linux.Memory;
using Memcr.Linux.Proc;

namespace Memcr.Service;

/// <summary>How the service listens, and the checkpoint options every request gets.</summary>
public sealed record ServiceOptions
{
    /// <summary>A TCP port, or the path of a UNIX socket (memcr -l).</summary>
    public required string Listen { get; init; }

    /// <summary>Address a TCP socket is bound to: loopback unless given (--listen-address).</summary>
    public IPAddress ListenAddress { get; init; } = IPAddress.Loopback;

    /// <summary>Group of the UNIX socket, which is then made 0660 (memcr -g).</summary>
    public int? SocketGroup { get; init; }

    /// <summary>Bound on each checkpoint and restore (memcr -t).</summary>
    public TimeSpan? Timeout { get; init; }

    /// <summary>Options of every checkpoint; the pid is the request's.</summary>
    public required CheckpointOptions Checkpoint { get; init; }

    /// <summary>The key came from a key file: a service started after a crash can restore encrypted images.</summary>
    public bool PersistentKey { get; init; }

    /// <summary>A request not completed within this time closes its connection (a client that sends part of one and hangs).</summary>
    public TimeSpan IdleTimeout { get; init; } = TimeSpan.FromSeconds(60);

    public string Version { get; init; } = "";
}

/// <summary>
/// The memcr service: answers checkpoint (100), restore (101) and status (102) requests on a TCP
/// or UNIX socket, each process handled by its own <see cref="TargetWorker"/>.
/// </summary>
public sealed class MemcrService : IDisposable
{
    private readonly ServiceOptions _options;
    private readonly Log _log;
    private readonly Dictionary<int, TargetWorker> _targets = [];
    private readonly Lock _lock = new();
    private readonly CancellationTokenSource _stop = new();
    private Timer? _sweep;
    private readonly List<Task> _connections = [];

    /// <summary>The buffers of every checkpoint and restore come from this one budget, however many run at once.</summary>
    private readonly MemoryBudget _budget;

    /// <summary>Gives memory back to the kernel a moment after the last operation has been answered.</summary>
    private readonly IdleTrimmer _trim;
    private Socket? _listener;
    private string? _socketPath;
    private volatile bool _stopping;

    public MemcrService(ServiceOptions options, Log log)
    {
        _options = options;
        _log = log;
        _budget = options.Checkpoint.Budget ?? new MemoryBudget();
        _trim = new IdleTrimmer(() => _budget.InUse == 0, log);
    }

    /// <summary>Each answer puts the trim off again: it comes once the service has had nothing to do for a moment.</summary>
    private void ScheduleTrim() => _trim.Schedule();

    /// <summary>Where it listens, for messages.</summary>
    public string Location { get; private set; } = "";

    /// <summary>Binds the socket and takes over processes found in the journal. Throws if it cannot listen.</summary>
    public void Start()
    {
        ulong files = FileOps.RaiseOpenFileLimit();
        _log.Debug($"open file limit {files}");
        TargetValidator.ValidateDumpDir(_options.Checkpoint.DumpDir);
        var endpoint = MemcrProtocol.ParseLocation(_options.Listen);
        if (endpoint is IPEndPoint ip)
        {
            endpoint = new IPEndPoint(_options.ListenAddress, ip.Port);
            _listener = new Socket(endpoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
            _listener.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
            _listener.Bind(endpoint);
            Location = $"TCP {endpoint}";
        }
        else
        {
            _socketPath = Path.GetFullPath(_options.Listen);
            RemoveStaleSocket(_socketPath);
            _listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            _listener.Bind(new UnixDomainSocketEndPoint(_socketPath));
            if (_options.SocketGroup is int gid)
            {
                FileOps.ChangeGroup(_socketPath, gid);
                File.SetUnixFileMode(_socketPath, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.GroupWrite);
            }
            Location = $"UNIX socket {_socketPath}";
        }
        _listener.Listen(1024);
        TakeOverJournal();
        if (_options.Checkpoint.Incremental)
        {
            SweepExited(null);
            _sweep = new Timer(SweepExited, null, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(1));
        }
    }

    /// <summary>A socket file left by a memcr that died is replaced; a live one, or any other file, is not.</summary>
    private static void RemoveStaleSocket(string path)
    {
        int? type = FileOps.FileType(path);
        if (type is null)
            return;
        if (type != FileOps.S_IFSOCK)
            throw new IOException($"cannot listen on {path}: it exists and is not a socket (left alone)");
        using (var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
        {
            try
            {
                probe.Connect(new UnixDomainSocketEndPoint(path));
                throw new IOException($"cannot listen on {path}: another service is listening there");
            }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionRefused)
            {
                // Nobody listens: stale.
            }
            catch (SocketException e)
            {
                throw new IOException($"cannot listen on {path}: it exists and is not a stale socket ({e.Message})");
            }
        }
        File.Delete(path);
    }

    private void TakeOverJournal()
    {
        string dir = _options.Checkpoint.DumpDir;
        foreach (var entry in Journal.ReadAll(dir, (path, why) => _log.Error($"ignoring unreadable journal {path}: {why}")))
        {
            var log = _log.For($"pid {entry.Pid}: ");
            bool same;
            char state = '?';
            try
            {
                same = ProcFs.ReadStartTime(entry.Pid) == entry.StartTime;
                state = ProcFs.ReadStatus(entry.Pid).State;
            }
            catch (ProcessGoneException)
            {
                same = false;
            }
            if (!same || (state != 'T' && !entry.Lazy))
            {
                log.Info(same
                    ? $"found in the journal but not stopped (state {state}): it was let run by someone else; forgetting it"
                    : "found in the journal but gone: removing its image");
                // Either way its image is of no use any more.
                Journal.Delete(dir, entry.Pid);
                TryDelete(entry.Image);
                continue;
            }
            var options = _options.Checkpoint with
            {
                Pid = entry.Pid,
                Codec = entry.Codec,
                Encryption = entry.Encryption,
                IncludeFileMappings = entry.FilePages,
                Key = entry.Encryption != Encryption.None && entry.PersistentKey ? _options.Checkpoint.Key : null,
            };
            log.Info(entry.Lazy
                ? "its lazy restore was left unfinished by a previous memcr: taking it over"
                : "left frozen by a previous memcr: taking it over");
            lock (_lock)
                _targets[entry.Pid] = TargetWorker.TakeOver(options, entry, log, Forget);
        }
    }

    private static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (IOException)
        {
        }
    }

    /// <summary>Serves until <see cref="Stop"/>; then waits for running work and, by default, restores every held process.</summary>
    public async Task RunAsync()
    {
        _log.Milestone($"memcr service listening on {Location}");
        ScheduleTrim(); // what starting up (and taking over the journal) left behind
        try
        {
            while (!_stop.IsCancellationRequested)
            {
                Socket client;
                try
                {
                    client = await _listener!.AcceptAsync(_stop.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    break;
                }
                catch (SocketException e) when (e.SocketErrorCode is SocketError.TooManyOpenSockets or SocketError.NoBufferSpaceAvailable)
                {
                    _log.Error($"accept: {e.Message}; retrying");
                    await Task.Delay(50).ConfigureAwait(false);
                    continue;
                }
                var task = ServeAsync(client);
                lock (_connections)
                {
                    _connections.RemoveAll(t => t.IsCompleted);
                    _connections.Add(task);
                }
            }
        }
        finally
        {
            _listener?.Dispose();
            if (_socketPath is not null)
                TryDelete(_socketPath);
        }
        await ShutdownAsync().ConfigureAwait(false);
    }

    /// <summary>Stops accepting connections and checkpoints; <see cref="RunAsync"/> then winds down.</summary>
    public void Stop()
    {
        _stopping = true;
        _stop.Cancel();
    }

    private async Task ShutdownAsync()
    {
        List<TargetWorker> held;
        lock (_lock)
            held = [.. _targets.Values];
        if (held.Count > 0)
            _log.Info($"stopping: restoring {held.Count} held {(held.Count == 1 ? "process" : "processes")}");
        foreach (var w in held)
        {
            // A checkpoint under way finishes first; then every held process gets its memory back.
            await w.Checkpointed.ConfigureAwait(false);
        }
        await Task.WhenAll(held.Select(w => w.RestoreAsync())).ConfigureAwait(false);
        await Task.WhenAll(held.Select(w => w.Ended)).ConfigureAwait(false);
        Task[] open;
        lock (_connections)
            open = [.. _connections];
        await Task.WhenAny(Task.WhenAll(open), Task.Delay(TimeSpan.FromSeconds(5))).ConfigureAwait(false);
        _log.Info("memcr service stopped");
    }

    private void Forget(TargetWorker w)
    {
        lock (_lock)
        {
            if (_targets.TryGetValue(w.Pid, out var current) && current == w)
                _targets.Remove(w.Pid);
        }
    }

    private async Task ServeAsync(Socket client)
    {
        using var _ = client;
        var request = new byte[MemcrProtocol.RequestSize];
        string peer = client.RemoteEndPoint is IPEndPoint ip ? ip.ToString() : "UNIX socket";
        try
        {
            while (true)
            {
                int got = await ReadRequestAsync(client, request).ConfigureAwait(false);
                if (got == 0)
                    return; // the client is done
                if (got < request.Length)
                {
                    _log.Error($"malformed request from {peer}: {got} of {request.Length} bytes, then {(got < 0 ? "nothing more" : "the connection closed")}; closing it");
                    return;
                }
                var (command, pid) = MemcrProtocol.ReadRequest(request);
                byte[] answer = await AnswerAsync(command, pid, peer).ConfigureAwait(false);
                await client.SendAsync(answer, SocketFlags.None).ConfigureAwait(false);
            }
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException or IOException)
        {
            // The client went away; what it asked for has been (or is being) done all the same.
        }
        catch (Exception e)
        {
            _log.Error($"internal error serving {peer}: {e}");
        }
    }

    /// <summary>Reads one request: its length when complete, 0 at a clean end, -(bytes) when the client stalls mid-request.</summary>
    private async Task<int> ReadRequestAsync(Socket client, byte[] request)
    {
        using var idle = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
        idle.CancelAfter(_options.IdleTimeout);
        int done = 0;
        try
        {
            while (done < request.Length)
            {
                int n = await client.ReceiveAsync(request.AsMemory(done), SocketFlags.None, idle.Token).ConfigureAwait(false);
                if (n == 0)
                    return done;
                done += n;
            }
            return done;
        }
        catch (OperationCanceledException)
        {
            return done == 0 ? 0 : -done;
        }
    }

    private async Task<byte[]> AnswerAsync(int command, int pid, string peer)
    {
        if (command == (int)MemcrCommand.Status)
            return StatusAnswer();
        MemcrResponse code;
        switch (command)
        {
            case (int)MemcrCommand.Checkpoint:
                code = await CheckpointAsync(pid).ConfigureAwait(false);
                break;
            case (int)MemcrCommand.Restore:
                code = await RestoreAsync(pid).ConfigureAwait(false);
                break;
            case (int)MemcrCommand.Forget:
                code = await ForgetAsync(pid).ConfigureAwait(false);
                break;
            default:
                _log.Error($"unknown command {command} (pid {pid}) from {peer}: answered {(int)MemcrResponse.Error}");
                code = MemcrResponse.Error;
                break;
        }
        var answer = new byte[MemcrProtocol.ResponseSize];
        MemcrProtocol.WriteInt32(answer, (int)code);
        return answer;
    }

    /// <summary>-2 for a pid that names no process memcr could checkpoint, else null.</summary>
    private MemcrResponse? InvalidPid(int pid, string what)
    {
        if (pid > 0 && pid != Environment.ProcessId && ProcFs.Exists(pid))
            return null;
        _log.Error($"{what} of pid {pid} refused: {(pid <= 0 ? "a pid must be > 0" : pid == Environment.ProcessId ? "it is memcr itself" : "no such process")}");
        return MemcrResponse.InvalidPid;
    }

    private async Task<MemcrResponse> CheckpointAsync(int pid)
    {
        if (InvalidPid(pid, "checkpoint") is { } invalid)
            return invalid;
        var log = _log.For($"pid {pid}: ");
        TargetWorker? worker = null;
        while (worker is null)
        {
            TargetWorker? restoring;
            lock (_lock)
            {
                if (_stopping)
                {
                    log.Error("checkpoint refused: the service is stopping");
                    return MemcrResponse.Error;
                }
                if (_targets.TryGetValue(pid, out restoring) && !restoring.Serving)
                {
                    log.Error($"checkpoint refused: it is already {restoring.State}");
                    return MemcrResponse.Error;
                }
                if (restoring is null)
                {
                    log.Step("checkpoint requested");
                    var options = _options.Checkpoint with { Pid = pid, Budget = _budget };
                    worker = TargetWorker.Checkpoint(options, log, _options.Timeout, _options.PersistentKey, Forget);
                    _targets[pid] = worker;
                }
            }
            if (restoring is not null)
            {
                // It runs, but its pages are still coming back from a lazy restore: parked again once they all are.
                log.Info("checkpoint requested while its lazy restore finishes: it follows");
                await restoring.Ended.ConfigureAwait(false);
            }
        }
        var result = await worker.Checkpointed.ConfigureAwait(false);
        log.Info(result == MemcrResponse.Ok ? "checkpointed" : "checkpoint failed");
        ScheduleTrim();
        return result;
    }

    /// <summary>Ends the write tracking of a process restored with --incremental and removes its kept images.</summary>
    private async Task<MemcrResponse> ForgetAsync(int pid)
    {
        if (InvalidPid(pid, "forget") is { } invalid)
            return invalid;
        var log = _log.For($"pid {pid}: ");
        lock (_lock)
        {
            if (_targets.TryGetValue(pid, out var worker))
            {
                log.Error($"forget refused: it is {worker.State} (restore it first)");
                return MemcrResponse.Error;
            }
        }
        try
        {
            bool tracked = await Task.Run(() => CheckpointSession.Forget(pid, _options.Checkpoint.DumpDir, log)).ConfigureAwait(false);
            if (!tracked)
                log.Info("forget: its writes were not tracked, nothing to do");
            return MemcrResponse.Ok;
        }
        catch (CheckpointException e)
        {
            log.Error(e.Message);
            return MemcrResponse.Error;
        }
    }

    /// <summary>Every second: the kept images of tracked processes that have exited are removed.</summary>
    private void SweepExited(object? _)
    {
        try
        {
            foreach (int pid in CheckpointSession.SweepExited(_options.Checkpoint.DumpDir, _log))
                _log.Info($"pid {pid} has exited: its write tracking ended, its kept images removed");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            _log.Error($"cannot sweep {_options.Checkpoint.DumpDir}: {e.Message}");
        }
    }

    private async Task<MemcrResponse> RestoreAsync(int pid)
    {
        if (InvalidPid(pid, "restore") is { } invalid)
            return invalid;
        var log = _log.For($"pid {pid}: ");
        TargetWorker? worker;
        lock (_lock)
            _targets.TryGetValue(pid, out worker);
        if (worker is null)
        {
            log.Error("restore refused: it is not checkpointed");
            return MemcrResponse.Error;
        }
        log.Step("restore requested");
        var restore = worker.RestoreAsync();
        if (_options.Timeout is { } t && await Task.WhenAny(restore, Task.Delay(t)).ConfigureAwait(false) != restore)
        {
            // Stopping half-way would leave it without part of its memory: the restore goes on.
            log.Error($"restore did not finish within {t.TotalSeconds:0.###} s: answered {(int)MemcrResponse.Error}; it goes on and the process runs once it is done");
            return MemcrResponse.Error;
        }
        var result = await restore.ConfigureAwait(false);
        log.Info(result == MemcrResponse.Ok ? "restored" : "restore failed");
        ScheduleTrim();
        return result;
    }

    private byte[] StatusAnswer()
    {
        List<TargetWorker> workers;
        lock (_lock)
            workers = [.. _targets.Values.OrderBy(w => w.Pid)];
        using var json = new MemoryStream();
        using (var w = new Utf8JsonWriter(json, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteNumber("daemon_pid", Environment.ProcessId);
            w.WriteString("version", _options.Version);
            w.WriteString("listening", Location);
            w.WriteString("dump_dir", _options.Checkpoint.DumpDir);
            w.WriteStartArray("processes");
            foreach (var t in workers)
            {
                var e = t.Entry;
                w.WriteStartObject();
                w.WriteNumber("pid", t.Pid);
                w.WriteString("state", t.State);
                w.WriteString("since", t.Since);
                if (e is not null)
                    w.WriteString("image", e.Image);
                else
                    w.WriteNull("image");
                w.WriteNumber("image_bytes", e?.ImageBytes ?? 0);
                w.WriteNumber("saved_bytes", e?.SavedBytes ?? 0);
                w.WriteNumber("rss_saved_kb", e?.RssSavedKb ?? 0);
                w.WriteBoolean("adopted", t.Adopted);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteEndObject();
        }
        var body = json.ToArray();
        var answer = new byte[MemcrProtocol.ResponseSize + 4 + body.Length];
        MemcrProtocol.WriteInt32(answer, (int)MemcrResponse.Ok);
        MemcrProtocol.WriteInt32(answer.AsSpan(4), body.Length);
        body.CopyTo(answer, 8);
        return answer;
    }

    public void Dispose()
    {
        _sweep?.Dispose();
        _trim.Dispose();
        _listener?.Dispose();
        _stop.Dispose();
    }
}
