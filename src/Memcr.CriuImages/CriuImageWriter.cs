using System.Buffers.Binary;
using Google.Protobuf;

namespace Memcr.CriuImages;

/// <summary>
/// Writes a CRIU image: its magic, then entries as they come (a 32-bit length, the message, and
/// the raw bytes that go with it). Nothing is kept in memory but the stream's buffer.
/// </summary>
public sealed class CriuImageWriter : IDisposable
{
    private readonly Stream _stream;
    private readonly bool _leaveOpen;

    public CriuImageWriter(Stream stream, ImageKind kind, string path, bool leaveOpen = false)
    {
        _stream = stream;
        _leaveOpen = leaveOpen;
        Kind = kind;
        Path = path;
        Span<byte> word = stackalloc byte[4];
        if (kind.LeadingMagic is { } leading)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(word, leading);
            Write(word);
        }
        BinaryPrimitives.WriteUInt32LittleEndian(word, kind.Magic);
        Write(word);
    }

    public ImageKind Kind { get; }

    public string Path { get; }

    /// <summary>Bytes written so far.</summary>
    public long Length { get; private set; }

    /// <summary>Creates (or replaces) the image file <paramref name="path"/>.</summary>
    public static CriuImageWriter Create(string path, ImageKind kind)
    {
        var stream = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 64 << 10);
        try
        {
            return new CriuImageWriter(stream, kind, path);
        }
        catch
        {
            stream.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Loads the image schema (every image kind and the descriptors of its messages), which takes
    /// milliseconds the first time: a dump does it before it freezes anything.
    /// </summary>
    public static void LoadSchema()
    {
        foreach (var kind in ImageKinds.All)
        {
            if (kind.Entry is { } entry)
                _ = Json.MessageToJson.MissingRequired(entry, []);
        }
    }

    /// <summary>
    /// Writes one entry: <paramref name="message"/> and the raw bytes that follow it. A message
    /// missing a required field is refused (CRIU could not read the image).
    /// </summary>
    public void Write(IMessage message, ReadOnlySpan<byte> extra = default)
    {
        var bytes = message.ToByteArray();
        if (Json.MessageToJson.MissingRequired(message.Descriptor, bytes) is { Count: > 0 } missing)
            throw new InvalidOperationException($"{Path}: a {message.Descriptor.Name} entry lacks required field(s) {string.Join(", ", missing)}");
        WriteRaw(bytes, extra);
    }

    /// <summary>Writes an entry whose message is already serialised (a <see cref="RawEntry"/> copied as it is).</summary>
    public void WriteRaw(ReadOnlySpan<byte> message, ReadOnlySpan<byte> extra = default)
    {
        Span<byte> word = stackalloc byte[4];
        BinaryPrimitives.WriteInt32LittleEndian(word, message.Length);
        Write(word);
        Write(message);
        Write(extra);
    }

    public void WriteRaw(RawEntry entry) => WriteRaw(entry.MessageBytes, entry.Extra);

    /// <summary>Raw bytes that belong to the last entry (pipe data written in pieces, a ghost file's contents).</summary>
    public void Write(ReadOnlySpan<byte> bytes)
    {
        _stream.Write(bytes);
        Length += bytes.Length;
    }

    public void Flush() => _stream.Flush();

    public void Dispose()
    {
        if (_leaveOpen)
            _stream.Flush();
        else
            _stream.Dispose();
    }
}
