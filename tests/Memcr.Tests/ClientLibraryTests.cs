using System.Net;
using System.Net.Sockets;
using Memcr.Client;

namespace Memcr.Tests;

/// <summary>The client library's timeouts, cancellation and wire format, against a listener that plays the service.</summary>
public sealed class ClientLibraryTests : IDisposable
{
    private readonly Socket _listener = new(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);

    public ClientLibraryTests()
    {
        _listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        _listener.Listen(16);
    }

    public void Dispose() => _listener.Dispose();

    private int Port => ((IPEndPoint)_listener.LocalEndPoint!).Port;

    [Fact]
    public async Task Requests_AreEightNativeEndianBytes_AndTheAnswerIsTakenAsIs()
    {
        var client = MemcrClient.ForLocation(Port.ToString(System.Globalization.CultureInfo.InvariantCulture));
        var call = client.RestoreAsync(4321);
        using var peer = await _listener.AcceptAsync();
        var request = new byte[8];
        Assert.Equal(8, await peer.ReceiveAsync(request));
        Assert.Equal(new byte[] { 101, 0, 0, 0, 0xE1, 0x10, 0, 0 }, request);
        await peer.SendAsync(new byte[] { 0xFE, 0xFF, 0xFF, 0xFF });
        Assert.Equal(MemcrResponse.InvalidPid, await call);
    }

    [Fact]
    public async Task A_SilentService_TimesOut_AndCancellationIsHonoured()
    {
        var client = new MemcrClient(new IPEndPoint(IPAddress.Loopback, Port)) { Timeout = TimeSpan.FromMilliseconds(200) };
        var e = await Assert.ThrowsAsync<TimeoutException>(() => client.CheckpointAsync(1));
        Assert.Contains("did not answer Checkpoint of pid 1 within 0.2 s", e.Message);

        using var cancel = new CancellationTokenSource(TimeSpan.FromMilliseconds(100));
        var slow = new MemcrClient(new IPEndPoint(IPAddress.Loopback, Port)) { Timeout = TimeSpan.FromMinutes(1) };
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => slow.GetStatusAsync(cancel.Token));
    }

    [Fact]
    public async Task A_ServiceThatHangsUp_IsAnIOException()
    {
        var client = MemcrClient.ForLocation(Port.ToString(System.Globalization.CultureInfo.InvariantCulture));
        var call = client.CheckpointAsync(7);
        using (var peer = await _listener.AcceptAsync())
            await peer.ReceiveAsync(new byte[8]);
        await Assert.ThrowsAsync<IOException>(() => call);
    }

    [Theory]
    [InlineData("0")]
    [InlineData("70000")]
    public void Locations_OutOfRange_AreRefused(string location) =>
        Assert.Throws<ArgumentException>(() => MemcrProtocol.ParseLocation(location));

    [Fact]
    public void A_LocationThatIsNotANumber_IsAUnixSocketPath() =>
        Assert.IsType<UnixDomainSocketEndPoint>(MemcrProtocol.ParseLocation("/run/memcr/memcr.sock"));
}
