using Google.Protobuf;
using Google.Protobuf.Reflection;

namespace Memcr.CriuImages;

/// <summary>
/// One entry of an image as it is stored: its message, and the raw bytes that belong to it and
/// follow it in the file (pipe contents, socket queues; padding included). Written back as it is,
/// it gives the same bytes.
/// </summary>
public sealed class RawEntry
{
    public RawEntry(long offset, IMessage message, byte[] messageBytes, byte[] extra)
    {
        Offset = offset;
        Message = message;
        MessageBytes = messageBytes;
        Extra = extra;
    }

    /// <summary>Where the entry's 32-bit length is in the file.</summary>
    public long Offset { get; }

    /// <summary>The message, parsed.</summary>
    public IMessage Message { get; }

    public MessageDescriptor Descriptor => Message.Descriptor;

    /// <summary>The message as it is in the file.</summary>
    public byte[] MessageBytes { get; }

    /// <summary>The raw bytes after the message that belong to it; empty when there are none.</summary>
    public byte[] Extra { get; }

    /// <summary>Bytes the entry takes in the file.</summary>
    public long Size => 4 + MessageBytes.Length + Extra.Length;
}
