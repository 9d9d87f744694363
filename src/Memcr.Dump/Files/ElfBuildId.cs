using System.Buffers.Binary;

namespace Memcr.Dump.Files;

/// <summary>
/// The GNU build-id of an ELF file (the NT_GNU_BUILD_ID note of a PT_NOTE segment): what proves at
/// restore that a binary or library is the one that was dumped, as CRIU's file validation does.
/// </summary>
internal static class ElfBuildId
{
    private const uint PtNote = 4, NtGnuBuildId = 3;

    /// <summary>The build-id as CRIU keeps it (little-endian 32-bit words), or null when the file has none.</summary>
    public static uint[]? Read(Stream file)
    {
        try
        {
            var header = new byte[64];
            if (file.Length < 64 || ReadAt(file, 0, header) < 64 || header[0] != 0x7f || header[1] != 'E' || header[2] != 'L' || header[3] != 'F')
                return null;
            bool is64 = header[4] == 2;
            if (header[5] != 1)
                return null; // big-endian: not a file of this machine
            ulong phoff = is64 ? BinaryPrimitives.ReadUInt64LittleEndian(header.AsSpan(32)) : BinaryPrimitives.ReadUInt32LittleEndian(header.AsSpan(28));
            int phentsize = BinaryPrimitives.ReadUInt16LittleEndian(header.AsSpan(is64 ? 54 : 42));
            int phnum = BinaryPrimitives.ReadUInt16LittleEndian(header.AsSpan(is64 ? 56 : 44));
            if (phnum == 0 || phentsize < (is64 ? 56 : 32) || phnum > 4096)
                return null;
            var phdrs = new byte[phentsize * phnum];
            if (ReadAt(file, (long)phoff, phdrs) < phdrs.Length)
                return null;
            for (int i = 0; i < phnum; i++)
            {
                var ph = phdrs.AsSpan(i * phentsize, phentsize);
                if (BinaryPrimitives.ReadUInt32LittleEndian(ph) != PtNote)
                    continue;
                ulong offset = is64 ? BinaryPrimitives.ReadUInt64LittleEndian(ph[8..]) : BinaryPrimitives.ReadUInt32LittleEndian(ph[4..]);
                ulong size = is64 ? BinaryPrimitives.ReadUInt64LittleEndian(ph[32..]) : BinaryPrimitives.ReadUInt32LittleEndian(ph[16..]);
                if (size > 1 << 20)
                    continue;
                var notes = new byte[size];
                if (ReadAt(file, (long)offset, notes) < notes.Length)
                    continue;
                if (Find(notes) is { } id)
                    return id;
            }
            return null;
        }
        catch (IOException)
        {
            return null;
        }
    }

    private static uint[]? Find(ReadOnlySpan<byte> notes)
    {
        for (int at = 0; at + 12 <= notes.Length;)
        {
            uint namesz = BinaryPrimitives.ReadUInt32LittleEndian(notes[at..]);
            uint descsz = BinaryPrimitives.ReadUInt32LittleEndian(notes[(at + 4)..]);
            uint type = BinaryPrimitives.ReadUInt32LittleEndian(notes[(at + 8)..]);
            long desc = at + 12 + Align4(namesz);
            if (namesz > 4096 || descsz > 4096 || desc + descsz > notes.Length)
                return null;
            if (type == NtGnuBuildId && descsz > 0)
            {
                var bytes = new byte[Align4(descsz)];
                notes.Slice((int)desc, (int)descsz).CopyTo(bytes);
                var words = new uint[bytes.Length / 4];
                for (int i = 0; i < words.Length; i++)
                    words[i] = BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(i * 4));
                return words;
            }
            at = (int)(desc + Align4(descsz));
        }
        return null;
    }

    private static long Align4(uint n) => (n + 3) & ~3L;

    private static int ReadAt(Stream file, long offset, byte[] into)
    {
        file.Position = offset;
        int done = 0;
        while (done < into.Length)
        {
            int n = file.Read(into, done, into.Length - done);
            if (n == 0)
                break;
            done += n;
        }
        return done;
    }

    /// <summary>The build-id as hex, for messages ("3f1c…").</summary>
    public static string Hex(IEnumerable<uint> words) =>
        string.Concat(words.SelectMany(BitConverter.GetBytes).Select(b => b.ToString("x2", System.Globalization.CultureInfo.InvariantCulture)));
}
