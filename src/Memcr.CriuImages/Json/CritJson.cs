using System.Buffers.Binary;
using System.Text.Json;
using Google.Protobuf;
using Google.Protobuf.Reflection;

namespace Memcr.CriuImages.Json;

/// <summary>
/// Whole images to and from the JSON crit prints: {"magic": NAME, "entries": [...]}, each entry
/// its message's fields and, where raw bytes follow the message, an "extra" key.
/// </summary>
public static class CritJson
{
    /// <summary>
    /// Writes <paramref name="reader"/>'s image as crit decode does (crit show: pretty), one entry
    /// at a time. With <paramref name="noPayload"/> the raw payloads are only sized ("... &lt;15B&gt;").
    /// </summary>
    public static void Decode(CriuImageReader reader, TextWriter output, bool pretty, bool noPayload = false)
    {
        var w = new PyJsonWriter(output, pretty ? 4 : null);
        output.Write('{');
        w.Separate(0, 1);
        w.WriteString("magic");
        output.Write(": ");
        w.WriteString(reader.Kind.Name);
        w.Separate(1, 1);
        w.WriteString("entries");
        output.Write(": ");
        int count = 0;
        foreach (var entry in reader.ReadAllRaw())
        {
            if (count == 0)
                output.Write('[');
            w.Separate(count++, 2);
            w.WriteValue(Entry(reader, entry, pretty, noPayload), 2);
        }
        if (count == 0)
        {
            output.Write("[]");
        }
        else
        {
            w.Close(1);
            output.Write(']');
        }
        w.Close(0);
        output.Write('}');
    }

    private static PyDict Entry(CriuImageReader reader, RawEntry entry, bool pretty, bool noPayload)
    {
        PyDict dict;
        try
        {
            dict = MessageToJson.Convert(entry.Descriptor, entry.MessageBytes, pretty);
        }
        catch (WireException e)
        {
            throw new CriuImageException(reader.Path, entry.Offset + 4, $"{entry.Descriptor.Name} does not parse: {e.Message}");
        }
        if (Extra(reader.Kind, entry, noPayload) is { } extra)
            dict.Add("extra", extra);
        return dict;
    }

    /// <summary>The "extra" value crit shows for an entry, or null when it shows none.</summary>
    private static object? Extra(ImageKind kind, RawEntry entry, bool noPayload)
    {
        var m = entry.Message;
        if (kind.Layout == ImageLayout.GhostFile)
            return noPayload || m is ghost_file_entry { Chunks: true } ? null : CritFormats.Base64Lines(entry.Extra);
        // A segment whose pages are in pagemaps has no data here (crit would read on regardless).
        if (kind.Extra == ExtraPayload.None || m is ipc_shm_entry { InPagemaps: true })
            return null;
        if (noPayload)
        {
            long size = m switch
            {
                ipc_sem_entry s => 2L * s.Nsems,
                ipc_shm_entry s => (long)s.Size,
                ipc_msg_entry => MessageQueue(entry.Extra).Sum(x => x.Header.Length + x.Data.Length),
                _ => entry.Extra.Length,
            };
            return $"... <{CritFormats.HumanSize(size)}>";
        }
        switch (m)
        {
            case tcp_stream_entry t:
                return new PyDict
                {
                    { "inq", CritFormats.Base64Lines(entry.Extra.AsSpan(0, (int)t.InqLen)) },
                    { "outq", CritFormats.Base64Lines(entry.Extra.AsSpan((int)t.InqLen)) },
                };
            case ipc_sem_entry s:
                return Enumerable.Range(0, (int)s.Nsems).Select(i => (object?)(ulong)BinaryPrimitives.ReadUInt16LittleEndian(entry.Extra.AsSpan(2 * i))).ToList();
            case ipc_shm_entry s:
                return CritFormats.Base64Lines(entry.Extra.AsSpan(0, (int)s.Size));
            case ipc_msg_entry:
                var list = new List<object?>();
                foreach (var (header, data) in MessageQueue(entry.Extra))
                {
                    list.Add(MessageToJson.Convert(ipc_msg.Descriptor, header, pretty: false));
                    list.Add(CritFormats.Base64Lines(data));
                }
                return list;
            default:
                return CritFormats.Base64Lines(entry.Extra);
        }
    }

    /// <summary>The messages of a queue's raw bytes (as <see cref="CriuImageReader"/> checked them).</summary>
    private static List<(byte[] Header, byte[] Data)> MessageQueue(byte[] extra)
    {
        var messages = new List<(byte[], byte[])>();
        for (int at = 0; at < extra.Length;)
        {
            int size = BinaryPrimitives.ReadInt32LittleEndian(extra.AsSpan(at));
            var header = extra.AsSpan(at + 4, size).ToArray();
            var msg = ipc_msg.Parser.ParseFrom(header);
            at += 4 + size;
            messages.Add((header, extra.AsSpan(at, (int)msg.Msize).ToArray()));
            at += (int)CriuImageReader.AlignUp(msg.Msize, 8);
        }
        return messages;
    }

    /// <summary>
    /// Writes the image that <paramref name="json"/> (crit's form, pretty or not) describes, as crit
    /// encode does. <paramref name="file"/> names the JSON in errors.
    /// </summary>
    public static void Encode(JsonElement json, Stream output, string file)
    {
        var conv = new JsonToMessage(file);
        if (json.ValueKind != JsonValueKind.Object)
            throw conv.Bad("$", "an image must be a JSON object with \"magic\" and \"entries\"");
        foreach (var p in json.EnumerateObject())
        {
            if (p.Name is not ("magic" or "entries"))
                throw conv.Bad("$", $"unknown key '{p.Name}': an image has \"magic\" and \"entries\"");
        }
        if (!json.TryGetProperty("magic", out var magic) || magic.ValueKind != JsonValueKind.String)
            throw conv.Bad("$.magic", "missing, or not a string");
        var kind = ImageKinds.ByName(magic.GetString()!)
            ?? throw conv.Bad("$.magic", $"unknown image kind '{magic.GetString()}'");
        if (!json.TryGetProperty("entries", out var entries) || entries.ValueKind != JsonValueKind.Array)
            throw conv.Bad("$.entries", "missing, or not an array");
        using var writer = new CriuImageWriter(output, kind, file, leaveOpen: true);
        int i = 0;
        bool ghostChunks = false;
        foreach (var e in entries.EnumerateArray())
        {
            string path = $"$.entries[{i}]";
            var descriptor = kind.Layout switch
            {
                ImageLayout.Pagemap when i == 0 => pagemap_head.Descriptor,
                ImageLayout.GhostFile when i > 0 => ghost_chunk_entry.Descriptor,
                _ => kind.Entry!,
            };
            if (e.ValueKind != JsonValueKind.Object)
                throw conv.Bad(path, "an entry must be a JSON object");
            bool hasExtra = e.TryGetProperty("extra", out var extra);
            var bytes = conv.Convert(descriptor, e, path, skip: "extra");
            var message = descriptor.Parser.ParseFrom(bytes);
            if (message is ghost_file_entry g)
                ghostChunks = g.Chunks;
            var payload = ExtraBytes(conv, kind, message, hasExtra ? extra : null, $"{path}.extra", ghostChunks);
            writer.WriteRaw(bytes, payload);
            i++;
        }
        writer.Flush();
    }

    /// <summary>The raw bytes an entry's "extra" stands for, checked against what its message says.</summary>
    private static byte[] ExtraBytes(JsonToMessage conv, ImageKind kind, IMessage message, JsonElement? extra, string path, bool ghostChunks)
    {
        long declared = message switch
        {
            pipe_data_entry p => p.Bytes,
            sk_packet_entry p => p.Length,
            bpfmap_data_entry b => (long)b.KeysBytes + b.ValuesBytes,
            ghost_chunk_entry c => (long)c.Len,
            _ => -1,
        };
        bool wanted = kind.Extra != ExtraPayload.None || kind.Layout == ImageLayout.GhostFile;
        if (!wanted)
        {
            if (extra is not null)
                throw conv.Bad(path, $"{kind.Name} entries have no extra payload");
            return [];
        }
        if (message is ghost_file_entry && ghostChunks)
        {
            if (extra is not null)
                throw conv.Bad(path, "a ghost file with chunks keeps its data in the chunk entries");
            return [];
        }
        if (extra is null)
        {
            if (declared > 0 || message is tcp_stream_entry { InqLen: > 0 } or tcp_stream_entry { OutqLen: > 0 } or ipc_sem_entry { Nsems: > 0 }
                or ipc_msg_entry { Qnum: > 0 } || (message is ipc_shm_entry s && !s.InPagemaps && s.Size > 0) || message is ghost_file_entry)
                throw conv.Bad(path, "missing: the entry declares data after it");
            return [];
        }
        var x = extra.Value;
        switch (message)
        {
            case tcp_stream_entry t:
            {
                if (x.ValueKind != JsonValueKind.Object || !x.TryGetProperty("inq", out var inq) || !x.TryGetProperty("outq", out var outq))
                    throw conv.Bad(path, "must be {\"inq\": BASE64, \"outq\": BASE64}");
                var i = Base64(conv, inq, $"{path}.inq", t.InqLen);
                var o = Base64(conv, outq, $"{path}.outq", t.OutqLen);
                return [.. i, .. o];
            }
            case ipc_sem_entry s:
            {
                if (x.ValueKind != JsonValueKind.Array || x.GetArrayLength() != s.Nsems)
                    throw conv.Bad(path, $"must be an array of nsems = {s.Nsems} semaphore values");
                var bytes = new byte[CriuImageReader.AlignUp(2L * s.Nsems, 8)];
                int k = 0;
                foreach (var v in x.EnumerateArray())
                {
                    if (!v.TryGetUInt16(out ushort value))
                        throw conv.Bad($"{path}[{k}]", "a semaphore value is a number 0..65535");
                    BinaryPrimitives.WriteUInt16LittleEndian(bytes.AsSpan(2 * k++), value);
                }
                return bytes;
            }
            case ipc_shm_entry s:
            {
                var data = Base64(conv, x, path, (long)s.Size);
                return [.. data, .. new byte[CriuImageReader.AlignUp(data.Length, 4) - data.Length]];
            }
            case ipc_msg_entry q:
                return QueueBytes(conv, x, path, q.Qnum);
            default:
                return Base64(conv, x, path, declared);
        }
    }

    private static byte[] QueueBytes(JsonToMessage conv, JsonElement x, string path, uint qnum)
    {
        if (x.ValueKind != JsonValueKind.Array || x.GetArrayLength() != 2 * qnum)
            throw conv.Bad(path, $"must be an array of qnum = {qnum} pairs: a message header, then its data in base64");
        var items = x.EnumerateArray().ToList();
        using var o = new MemoryStream();
        var word = new byte[4];
        for (int k = 0; k < items.Count; k += 2)
        {
            var header = conv.Convert(ipc_msg.Descriptor, items[k], $"{path}[{k}]");
            var msg = ipc_msg.Parser.ParseFrom(header);
            var data = Base64(conv, items[k + 1], $"{path}[{k + 1}]", msg.Msize);
            BinaryPrimitives.WriteInt32LittleEndian(word, header.Length);
            o.Write(word);
            o.Write(header);
            o.Write(data);
            o.Write(new byte[CriuImageReader.AlignUp(data.Length, 8) - data.Length]);
        }
        return o.ToArray();
    }

    private static byte[] Base64(JsonToMessage conv, JsonElement v, string path, long expected)
    {
        if (v.ValueKind != JsonValueKind.String)
            throw conv.Bad(path, "must be a base64 string");
        var bytes = CritFormats.FromBase64(v.GetString()!) ?? throw conv.Bad(path, "not valid base64");
        if (expected >= 0 && bytes.Length != expected)
            throw conv.Bad(path, $"{bytes.Length} bytes where the entry declares {expected}");
        return bytes;
    }

    /// <summary>The descriptor of every message of an image kind (the pagemap head and ghost chunks included).</summary>
    public static IEnumerable<MessageDescriptor> MessagesOf(ImageKind kind) => kind.Layout switch
    {
        ImageLayout.Pagemap => [pagemap_head.Descriptor, kind.Entry!],
        ImageLayout.GhostFile => [kind.Entry!, ghost_chunk_entry.Descriptor],
        _ => [kind.Entry!],
    };
}
