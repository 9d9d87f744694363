namespace Memcr.CriuImages.Json;

/// <summary>The protobuf wire format, read field by field from a message's bytes, every length checked.</summary>
internal ref struct WireReader(ReadOnlySpan<byte> data)
{
    private readonly ReadOnlySpan<byte> _data = data;
    private int _at;

    public readonly bool AtEnd => _at >= _data.Length;

    public readonly int Position => _at;

    /// <summary>A field's number and wire type.</summary>
    public (int Number, int WireType) ReadTag()
    {
        ulong tag = ReadVarint();
        int number = (int)(tag >> 3);
        if (tag >> 3 > int.MaxValue || number == 0)
            throw new WireException($"field number {tag >> 3} at byte {_at}");
        return (number, (int)(tag & 7));
    }

    public ulong ReadVarint()
    {
        ulong value = 0;
        for (int shift = 0; shift < 70; shift += 7)
        {
            if (_at >= _data.Length)
                throw new WireException("a varint runs past the end of the message");
            byte b = _data[_at++];
            value |= (ulong)(b & 0x7f) << shift;
            if (b < 0x80)
                return value;
        }
        throw new WireException($"a varint longer than 10 bytes at byte {_at}");
    }

    public ulong ReadFixed64() => BitConverter.ToUInt64(Take(8));

    public uint ReadFixed32() => BitConverter.ToUInt32(Take(4));

    public ReadOnlySpan<byte> ReadLengthDelimited()
    {
        ulong n = ReadVarint();
        if (n > (ulong)(_data.Length - _at))
            throw new WireException($"a field of {n} bytes at byte {_at} runs past the end of the message ({_data.Length - _at} bytes left)");
        return Take((int)n);
    }

    private ReadOnlySpan<byte> Take(int n)
    {
        if (n > _data.Length - _at)
            throw new WireException($"{n} bytes at byte {_at} run past the end of the message");
        var s = _data.Slice(_at, n);
        _at += n;
        return s;
    }

    /// <summary>Skips a field of <paramref name="wireType"/> (groups included) whose tag was just read.</summary>
    public void Skip(int wireType, int number, int depth = 0)
    {
        switch (wireType)
        {
            case 0: ReadVarint(); break;
            case 1: Take(8); break;
            case 2: ReadLengthDelimited(); break;
            case 5: Take(4); break;
            case 3:
                if (depth > 100)
                    throw new WireException("groups nested too deep");
                while (true)
                {
                    var (n, w) = ReadTag();
                    if (w == 4)
                    {
                        if (n != number)
                            throw new WireException($"group {number} ends with the end of group {n}");
                        return;
                    }
                    Skip(w, n, depth + 1);
                }
            default:
                throw new WireException($"wire type {wireType} (field {number}) at byte {_at}");
        }
    }
}

/// <summary>Bytes that are not a well-formed protobuf message.</summary>
internal sealed class WireException(string message) : Exception(message);
