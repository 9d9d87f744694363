using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Memcr.Client;

/// <summary>
/// Talks to a memcr service (<c>memcr -l PORT|PATH</c>). Each call opens its own connection, so
/// one client can be used from many tasks at once. Calls end when the service answers, when
/// <see cref="Timeout"/> passes (<see cref="TimeoutException"/>) or when the token is cancelled
/// (<see cref="OperationCanceledException"/>); the service finishes an operation it has started
/// even if the client goes away.
/// </summary>
/// <example>
/// <code>
/// var memcr = MemcrClient.ForLocation("/run/memcr/memcr.sock");
/// if (await memcr.CheckpointAsync(pid) == MemcrResponse.Ok)
///     ...                                 // pid is frozen, its memory on disk
/// await memcr.RestoreAsync(pid);
/// var status = await memcr.GetStatusAsync();
/// </code>
/// </example>
public sealed class MemcrClient(EndPoint endpoint)
{
    public EndPoint EndPoint { get; } = endpoint;

    /// <summary>Longest a call waits for the service (checkpointing gigabytes takes seconds).</summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromMinutes(2);

    /// <summary>A client for a location as memcr-client takes it: a TCP port on 127.0.0.1 or a UNIX socket path.</summary>
    public static MemcrClient ForLocation(string location) => new(MemcrProtocol.ParseLocation(location));

    /// <summary>Freezes <paramref name="pid"/>, saves its memory and drops it.</summary>
    public Task<MemcrResponse> CheckpointAsync(int pid, CancellationToken cancel = default) => SendAsync(MemcrCommand.Checkpoint, pid, cancel);

    /// <summary>Gives <paramref name="pid"/> its memory back and lets it run.</summary>
    public Task<MemcrResponse> RestoreAsync(int pid, CancellationToken cancel = default) => SendAsync(MemcrCommand.Restore, pid, cancel);

    /// <summary>Sends one request and returns the service's answer.</summary>
    public Task<MemcrResponse> SendAsync(MemcrCommand command, int pid, CancellationToken cancel = default) =>
        CallAsync((c, token) => c.SendAsync(command, pid, token), $"{command} of pid {pid}", cancel);

    /// <summary>Which processes the service holds, since when, and how much memory they gave back.</summary>
    public async Task<MemcrStatus> GetStatusAsync(CancellationToken cancel = default) =>
        MemcrStatus.Parse(await CallAsync((c, token) => c.StatusJsonAsync(token), "a status request", cancel).ConfigureAwait(false));

    /// <summary>Opens a connection and runs <paramref name="call"/> on it within <see cref="Timeout"/>.</summary>
    private async Task<T> CallAsync<T>(Func<MemcrConnection, CancellationToken, Task<T>> call, string what, CancellationToken cancel)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancel);
        timeout.CancelAfter(Timeout);
        try
        {
            await using var connection = await MemcrConnection.OpenAsync(EndPoint, timeout.Token).ConfigureAwait(false);
            return await call(connection, timeout.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!cancel.IsCancellationRequested)
        {
            throw new TimeoutException($"memcr service at {EndPoint} did not answer {what} within {Timeout.TotalSeconds:0.#} s");
        }
    }
}

/// <summary>
/// One connection to a memcr service, for several requests in a row (as memcr-client -c -r sends
/// a checkpoint and then a restore on one connection).
/// </summary>
public sealed class MemcrConnection : IAsyncDisposable, IDisposable
{
    private readonly Socket _socket;
    private readonly EndPoint _endpoint;

    private MemcrConnection(Socket socket, EndPoint endpoint)
    {
        _socket = socket;
        _endpoint = endpoint;
    }

    public static async Task<MemcrConnection> OpenAsync(EndPoint endpoint, CancellationToken cancel = default)
    {
        var protocol = endpoint is UnixDomainSocketEndPoint ? ProtocolType.Unspecified : ProtocolType.Tcp;
        var socket = new Socket(endpoint.AddressFamily, SocketType.Stream, protocol);
        try
        {
            await socket.ConnectAsync(endpoint, cancel).ConfigureAwait(false);
            return new MemcrConnection(socket, endpoint);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>Sends a checkpoint or restore request and waits for its 4-byte answer.</summary>
    public async Task<MemcrResponse> SendAsync(MemcrCommand command, int pid, CancellationToken cancel = default) =>
        (MemcrResponse)await RequestAsync(command, pid, cancel).ConfigureAwait(false);

    /// <summary>Sends a status request; returns the JSON document the service answers with.</summary>
    public async Task<string> StatusJsonAsync(CancellationToken cancel = default)
    {
        int code = await RequestAsync(MemcrCommand.Status, 0, cancel).ConfigureAwait(false);
        if (code != (int)MemcrResponse.Ok)
            throw new IOException($"memcr service at {_endpoint} refused the status request ({code}): it may be an original memcr, which has no status");
        var head = new byte[4];
        await ReadExactAsync(head, cancel).ConfigureAwait(false);
        int length = MemcrProtocol.ReadInt32(head);
        if (length is < 0 or > MemcrProtocol.MaxStatusBytes)
            throw new IOException($"memcr service at {_endpoint} announced a status of {length} bytes");
        var json = new byte[length];
        await ReadExactAsync(json, cancel).ConfigureAwait(false);
        return Encoding.UTF8.GetString(json);
    }

    private async Task<int> RequestAsync(MemcrCommand command, int pid, CancellationToken cancel)
    {
        var request = new byte[MemcrProtocol.RequestSize];
        MemcrProtocol.WriteRequest(request, command, pid);
        await _socket.SendAsync(request, SocketFlags.None, cancel).ConfigureAwait(false);
        var response = new byte[MemcrProtocol.ResponseSize];
        await ReadExactAsync(response, cancel).ConfigureAwait(false);
        return MemcrProtocol.ReadInt32(response);
    }

    private async Task ReadExactAsync(Memory<byte> into, CancellationToken cancel)
    {
        int done = 0;
        while (done < into.Length)
        {
            int n = await _socket.ReceiveAsync(into[done..], SocketFlags.None, cancel).ConfigureAwait(false);
            if (n == 0)
                throw new IOException($"the memcr service at {_endpoint} closed the connection before answering");
            done += n;
        }
    }

    public void Dispose() => _socket.Dispose();

    public ValueTask DisposeAsync()
    {
        _socket.Dispose();
        return ValueTask.CompletedTask;
    }
}
