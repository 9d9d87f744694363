using System.Buffers.Binary;
using Memcr.Image;
using Microsoft.Win32.SafeHandles;

namespace Memcr.Engine.Lazy;

/// <summary>
/// What a lazy restore knows that its images do not: which records were owed when the process
/// resumed, and every range the process discarded or moved since. It is kept next to the image
/// (<c>IMAGE.lazy</c>) and written as each event is read, so that a memcr taking over the restore
/// of a memcr that died knows what is still owed: discarded pages must read as zeros, not as the
/// image's bytes. Each write goes straight to the kernel (no buffering, no fsync): it must outlive
/// memcr, not the machine, which the process would not outlive either.
/// </summary>
internal sealed class LazyLedger : IDisposable
{
    private static ReadOnlySpan<byte> Magic => "MCRLAZY1"u8;
    private const int EventSize = 25;
    private const byte Removed = 1, Moved = 2;

    private readonly SafeFileHandle _file;
    private readonly string _path;
    private readonly Action<string> _error;
    private long _end;
    private bool _broken;

    private LazyLedger(SafeFileHandle file, string path, long end, Action<string> error)
    {
        _file = file;
        _path = path;
        _end = end;
        _error = error;
    }

    public static string PathFor(string imagePath) => imagePath + ".lazy";

    /// <summary>Starts the ledger of a restore whose owed records are those marked in <paramref name="owed"/> (by their numbers in <see cref="LazyImages"/>: those of every image of a chain).</summary>
    public static LazyLedger Create(string imagePath, bool[] owed, Action<string> error)
    {
        string path = PathFor(imagePath);
        var header = new byte[Magic.Length + 4 + (owed.Length + 7) / 8];
        Magic.CopyTo(header);
        BinaryPrimitives.WriteInt32LittleEndian(header.AsSpan(Magic.Length), owed.Length);
        for (int i = 0; i < owed.Length; i++)
        {
            if (owed[i])
                header[Magic.Length + 4 + i / 8] |= (byte)(1 << (i % 8));
        }
        var file = new FileStream(path, new FileStreamOptions
        {
            Mode = FileMode.Create,
            Access = FileAccess.Write,
            BufferSize = 0,
            UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite,
        }).SafeFileHandle;
        try
        {
            RandomAccess.Write(file, header, 0);
        }
        catch
        {
            file.Dispose();
            File.Delete(path);
            throw;
        }
        return new LazyLedger(file, path, header.Length, error);
    }

    /// <summary>Goes on with the ledger of a restore being taken over (should this memcr die too); null if there is none.</summary>
    public static LazyLedger? Reopen(string imagePath, Action<string> error)
    {
        string path = PathFor(imagePath);
        if (!File.Exists(path))
            return null;
        var file = File.OpenHandle(path, FileMode.Open, FileAccess.Write);
        return new LazyLedger(file, path, RandomAccess.GetLength(file), error);
    }

    /// <summary>The process discarded [start, end) (madvise, munmap): nothing there is owed any more.</summary>
    public void Remove(ulong start, ulong end) => Append(Removed, start, end, 0);

    /// <summary>The process moved [from, from + length) to <paramref name="to"/> (mremap).</summary>
    public void Move(ulong from, ulong to, ulong length) => Append(Moved, from, to, length);

    private void Append(byte kind, ulong a, ulong b, ulong c)
    {
        if (_broken)
            return;
        Span<byte> e = stackalloc byte[EventSize];
        e[0] = kind;
        BinaryPrimitives.WriteUInt64LittleEndian(e[1..], a);
        BinaryPrimitives.WriteUInt64LittleEndian(e[9..], b);
        BinaryPrimitives.WriteUInt64LittleEndian(e[17..], c);
        try
        {
            RandomAccess.Write(_file, e, _end);
            _end += EventSize;
        }
        catch (IOException x)
        {
            // A ledger that misses an event would make a take-over give back pages the process
            // discarded: better none, and a take-over that says it has none.
            _broken = true;
            _error($"cannot write {_path}: {x.Message}; removed it (a memcr that takes this restore over would not know what the process discarded meanwhile)");
            TryDelete(_path);
        }
    }

    /// <summary>
    /// What is still owed by the restore whose ledger is at <paramref name="imagePath"/>.lazy, as far
    /// as the ledger tells (pages that came back since are owed too: copying them again finds them
    /// there). Null when there is no ledger; throws <see cref="ImageFormatException"/> for a
    /// ledger that does not fit the image.
    /// </summary>
    public static PendingPages? Replay(string imagePath, LazyImages images)
    {
        string path = PathFor(imagePath);
        byte[] data;
        try
        {
            data = File.ReadAllBytes(path);
        }
        catch (FileNotFoundException)
        {
            return null;
        }
        int count = images.Count;
        int headerLength = Magic.Length + 4 + (count + 7) / 8;
        if (data.Length < headerLength || !data.AsSpan(0, Magic.Length).SequenceEqual(Magic))
            throw new ImageFormatException(path, 0, "not a lazy restore ledger");
        if (BinaryPrimitives.ReadInt32LittleEndian(data.AsSpan(Magic.Length)) != count)
            throw new ImageFormatException(path, Magic.Length, $"the ledger is of an image of {BinaryPrimitives.ReadInt32LittleEndian(data.AsSpan(Magic.Length))} records, not {count}");
        var bits = data.AsSpan(Magic.Length + 4);
        var owed = new bool[count];
        for (int i = 0; i < count; i++)
            owed[i] = (bits[i / 8] & (1 << (i % 8))) != 0;
        var pending = new PendingPages(images.Owed(owed));
        // A write cut short by memcr's death leaves part of one event at the end: not an event.
        for (int at = headerLength; at + EventSize <= data.Length; at += EventSize)
        {
            var e = data.AsSpan(at, EventSize);
            ulong a = BinaryPrimitives.ReadUInt64LittleEndian(e[1..]);
            ulong b = BinaryPrimitives.ReadUInt64LittleEndian(e[9..]);
            ulong c = BinaryPrimitives.ReadUInt64LittleEndian(e[17..]);
            if (e[0] == Removed)
                pending.Remove(a, b);
            else if (e[0] == Moved)
                pending.Move(a, b, c);
            else
                throw new ImageFormatException(path, at, $"unknown ledger event {e[0]}");
        }
        return pending;
    }

    public static void Delete(string imagePath) => TryDelete(PathFor(imagePath));

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

    public void Dispose() => _file.Dispose();
}
