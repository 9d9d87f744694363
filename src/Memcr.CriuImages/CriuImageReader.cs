using System.Buffers.Binary;
using Google.Protobuf;
using Google.Protobuf.Reflection;

namespace Memcr.CriuImages;

/// <summary>
/// Reads a CRIU image entry by entry: the magic, then each entry's length, message and the raw
/// bytes that follow it. One entry is in memory at a time. Every length is checked against what
/// the file holds before anything is allocated for it (and a pipe is read in chunks, so a hostile
/// length costs no more memory than the bytes that really come).
/// </summary>
public sealed class CriuImageReader : IDisposable
{
    /// <summary>Lengths above this are read in chunks as the data arrives, never allocated up front.</summary>
    private const int ChunkBytes = 1 << 20;

    private readonly Stream _stream;
    private readonly bool _leaveOpen;
    private readonly long _length;
    private long _position;
    private int _index;
    private bool _ghostDataRead;

    private CriuImageReader(Stream stream, string path, bool leaveOpen)
    {
        _stream = stream;
        Path = path;
        _leaveOpen = leaveOpen;
        _length = stream.CanSeek ? stream.Length - stream.Position : -1;
        (Kind, LeadingMagic) = ReadMagic();
    }

    /// <summary>The file (or the name given for a stream), for messages.</summary>
    public string Path { get; }

    public ImageKind Kind { get; }

    /// <summary>The common or service magic the file starts with, or null when it has none (inventory).</summary>
    public uint? LeadingMagic { get; }

    /// <summary>Bytes read so far.</summary>
    public long Position => _position;

    /// <summary>Opens <paramref name="path"/>; if <paramref name="expected"/> is given the image must be of that kind.</summary>
    public static CriuImageReader Open(string path, ImageKind? expected = null)
    {
        var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 64 << 10);
        try
        {
            return Open(stream, path, expected);
        }
        catch
        {
            stream.Dispose();
            throw;
        }
    }

    /// <summary>Reads from <paramref name="stream"/> (a pipe is fine), named <paramref name="path"/> in errors.</summary>
    public static CriuImageReader Open(Stream stream, string path, ImageKind? expected = null, bool leaveOpen = false)
    {
        var reader = new CriuImageReader(stream, path, leaveOpen);
        if (expected is not null && reader.Kind != expected)
        {
            reader.Dispose();
            throw new CriuImageException(path, 0, $"a {reader.Kind.Name} image where a {expected.Name} image was expected");
        }
        return reader;
    }

    private (ImageKind, uint?) ReadMagic()
    {
        var word = new byte[4];
        if (!TryFill(word))
            throw new CriuImageException(Path, 0, _position == 0 ? "empty file: no magic" : "truncated magic");
        uint first = BinaryPrimitives.ReadUInt32LittleEndian(word);
        uint? leading = null;
        uint magic = first;
        if (first is ImageMagic.Common or ImageMagic.Service)
        {
            leading = first;
            if (!TryFill(word))
                throw new CriuImageException(Path, _position, "truncated magic: the image's own magic is missing after the common one");
            magic = BinaryPrimitives.ReadUInt32LittleEndian(word);
        }
        var kind = ImageKinds.ByMagic(magic)
            ?? throw new CriuImageException(Path, _position - 4, $"unknown magic 0x{magic:x8}: {ImageKinds.Describe(magic)}");
        return (kind, leading);
    }

    /// <summary>The next entry, or null at the end of the image.</summary>
    public RawEntry? ReadRaw()
    {
        if (_ghostDataRead)
            return null; // the file's bytes were the first entry's extra
        long offset = _position;
        var word = new byte[4];
        int got = Fill(word);
        if (got == 0)
            return null;
        if (got < 4)
            throw new CriuImageException(Path, offset, $"truncated entry: {got} of the 4 bytes of its length");
        int size = BinaryPrimitives.ReadInt32LittleEndian(word);
        if (size < 0)
            throw new CriuImageException(Path, offset, $"entry length {size} is negative");
        var descriptor = DescriptorAt(_index);
        byte[] bytes = ReadBytes(size, offset, $"{descriptor.Name} message of {size} bytes");
        var message = Parse(descriptor, bytes, offset);
        byte[] extra = ReadExtra(message, offset);
        _index++;
        return new RawEntry(offset, message, bytes, extra);
    }

    /// <summary>Every remaining entry, one at a time.</summary>
    public IEnumerable<RawEntry> ReadAllRaw()
    {
        while (ReadRaw() is { } e)
            yield return e;
    }

    /// <summary>The next entry's message, or null at the end.</summary>
    public T? Read<T>() where T : class, IMessage<T> => ReadRaw()?.Message is { } m ? Cast<T>(m) : null;

    /// <summary>Every remaining entry's message.</summary>
    public IEnumerable<T> ReadAll<T>() where T : class, IMessage<T>
    {
        while (ReadRaw() is { } e)
            yield return Cast<T>(e.Message);
    }

    /// <summary>The image's only entry (core, mm, fs, ids and others hold one).</summary>
    public T ReadSingle<T>() where T : class, IMessage<T> =>
        Read<T>() ?? throw new CriuImageException(Path, _position, $"no entry: a {Kind.Name} image holds one");

    private T Cast<T>(IMessage m) where T : class, IMessage<T> =>
        m as T ?? throw new InvalidOperationException($"{Path}: entries of {Kind.Name} are {m.Descriptor.Name}, not {typeof(T).Name}");

    /// <summary>What entry <paramref name="index"/> holds: pagemap and ghost files start with a different message.</summary>
    private MessageDescriptor DescriptorAt(int index) => Kind.Layout switch
    {
        ImageLayout.Pagemap when index == 0 => pagemap_head.Descriptor,
        ImageLayout.GhostFile when index > 0 => ghost_chunk_entry.Descriptor,
        _ => Kind.Entry!,
    };

    private byte[] ReadExtra(IMessage message, long offset)
    {
        long n = message switch
        {
            pipe_data_entry p => p.Bytes,
            sk_packet_entry p => p.Length,
            tcp_stream_entry t => (long)t.InqLen + t.OutqLen,
            bpfmap_data_entry b => (long)b.KeysBytes + b.ValuesBytes,
            ipc_sem_entry s => AlignUp(2L * s.Nsems, 8),
            ipc_shm_entry s when !(s.HasInPagemaps && s.InPagemaps) => AlignUp((long)s.Size, 4),
            ghost_chunk_entry c => (long)c.Len,
            _ => 0,
        };
        if (message is ghost_file_entry { Chunks: false })
            return ReadToEnd(offset);
        if (message is ipc_msg_entry queue)
            return ReadMessageQueue(queue);
        if (n == 0)
            return [];
        if (n > int.MaxValue)
            throw new CriuImageException(Path, offset, $"{message.Descriptor.Name} declares {n} bytes of data after it: more than an entry can hold");
        return ReadBytes((int)n, offset, $"{n} bytes of data after the {message.Descriptor.Name} message");
    }

    /// <summary>A ghost file without chunks: the file's bytes are everything after its entry.</summary>
    private byte[] ReadToEnd(long offset)
    {
        _ghostDataRead = true;
        if (_length >= 0)
        {
            long rest = _length - _position;
            if (rest > int.MaxValue)
                throw new CriuImageException(Path, offset, $"ghost file data of {rest} bytes: more than an entry can hold");
            return ReadBytes((int)rest, offset, "ghost file data");
        }
        using var data = new MemoryStream();
        _stream.CopyTo(data);
        _position += data.Length;
        return data.ToArray();
    }

    /// <summary>qnum messages, each a 32-bit length, an ipc_msg and msize bytes padded to 8.</summary>
    private byte[] ReadMessageQueue(ipc_msg_entry queue)
    {
        using var all = new MemoryStream();
        for (uint i = 0; i < queue.Qnum; i++)
        {
            long at = _position;
            var word = new byte[4];
            if (Fill(word) < 4)
                throw new CriuImageException(Path, at, $"truncated message queue: message {i} of {queue.Qnum} is missing");
            int size = BinaryPrimitives.ReadInt32LittleEndian(word);
            if (size < 0)
                throw new CriuImageException(Path, at, $"message {i} of the queue has a negative length {size}");
            byte[] msgBytes = ReadBytes(size, at, $"ipc_msg message of {size} bytes");
            var msg = (ipc_msg)Parse(ipc_msg.Descriptor, msgBytes, at);
            byte[] data = ReadBytes((int)AlignUp(msg.Msize, 8), at, $"{msg.Msize} bytes of message {i}");
            all.Write(word);
            all.Write(msgBytes);
            all.Write(data);
        }
        return all.ToArray();
    }

    /// <summary>The message whose length word is at <paramref name="offset"/>.</summary>
    private IMessage Parse(MessageDescriptor descriptor, byte[] bytes, long offset)
    {
        try
        {
            return descriptor.Parser.ParseFrom(bytes);
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new CriuImageException(Path, offset + 4, $"{descriptor.Name} message of {bytes.Length} bytes does not parse: {e.Message}", e);
        }
    }

    internal static long AlignUp(long n, long to) => (n + to - 1) / to * to;

    private byte[] ReadBytes(int count, long entryOffset, string what)
    {
        if (_length >= 0 && count > _length - _position)
        {
            throw new CriuImageException(Path, entryOffset,
                $"truncated: the {what} run past the end of the file ({_length - _position} bytes left at offset {_position})");
        }
        if (count <= ChunkBytes || _length >= 0)
        {
            var buffer = new byte[count];
            int got = Fill(buffer);
            if (got < count)
                throw new CriuImageException(Path, entryOffset, $"truncated: the {what} end after {got} bytes");
            return buffer;
        }
        // A stream of unknown length: only what really arrives is kept.
        using var gathered = new MemoryStream();
        var chunk = new byte[ChunkBytes];
        int left = count;
        while (left > 0)
        {
            int got = Fill(chunk.AsSpan(0, Math.Min(left, chunk.Length)));
            gathered.Write(chunk, 0, got);
            if (got < Math.Min(left, chunk.Length))
                throw new CriuImageException(Path, entryOffset, $"truncated: the {what} end after {count - left + got} bytes");
            left -= got;
        }
        return gathered.ToArray();
    }

    private bool TryFill(Span<byte> buffer) => Fill(buffer) == buffer.Length;

    private int Fill(Span<byte> buffer)
    {
        int done = 0;
        while (done < buffer.Length)
        {
            int n = _stream.Read(buffer[done..]);
            if (n == 0)
                break;
            done += n;
        }
        _position += done;
        return done;
    }

    public void Dispose()
    {
        if (!_leaveOpen)
            _stream.Dispose();
    }
}
