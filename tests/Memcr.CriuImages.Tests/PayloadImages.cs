using System.Buffers.Binary;
using Google.Protobuf;

namespace Memcr.CriuImages.Tests;

/// <summary>Random images of every kind whose entries carry raw bytes after them.</summary>
internal static class PayloadImages
{
    private static byte[] Bytes(Random rng, int max = 300)
    {
        var b = new byte[rng.Next(max)];
        rng.NextBytes(b);
        return b;
    }

    private static fown_entry Fown() => new() { Uid = 0, Euid = 0, Signum = 0, PidType = 0, Pid = 0 };

    private static ipc_desc_entry Desc(Random rng) => new() { Key = (uint)rng.Next(), Uid = 0, Gid = 0, Cuid = 0, Cgid = 0, Mode = 0x1b6, Id = (uint)rng.Next(100) };

    public static IReadOnlyList<(ImageKind Kind, Action<CriuImageWriter, Random> Write)> All { get; } =
    [
        (ImageKinds.PipesData, (w, rng) =>
        {
            for (int i = rng.Next(4); i > 0; i--)
            {
                var data = Bytes(rng);
                w.Write(new pipe_data_entry { PipeId = (uint)rng.Next(), Bytes = (uint)data.Length, Size = 65536 }, data);
            }
        }),
        (ImageKinds.FifoData, (w, rng) =>
        {
            var data = Bytes(rng);
            w.Write(new pipe_data_entry { PipeId = 7, Bytes = (uint)data.Length }, data);
        }),
        (ImageKinds.SkQueues, (w, rng) =>
        {
            for (int i = rng.Next(4); i > 0; i--)
            {
                var data = Bytes(rng);
                var e = new sk_packet_entry { IdFor = (uint)rng.Next(), Length = (uint)data.Length };
                if (rng.Next(2) == 0)
                    e.Scm.Add(new scm_entry { Type = 1, Rights = { 3, 4 } });
                w.Write(e, data);
            }
        }),
        (ImageKinds.TcpStream, (w, rng) =>
        {
            var inq = Bytes(rng);
            var outq = Bytes(rng);
            w.Write(new tcp_stream_entry
            {
                InqLen = (uint)inq.Length, InqSeq = (uint)rng.Next(), OutqLen = (uint)outq.Length, OutqSeq = (uint)rng.Next(),
                OptMask = 7, SndWscale = 7, MssClamp = 65495, UnsqLen = (uint)rng.Next(outq.Length + 1),
            }, [.. inq, .. outq]);
        }),
        (ImageKinds.BpfmapData, (w, rng) =>
        {
            var keys = Bytes(rng, 64);
            var values = Bytes(rng, 64);
            w.Write(new bpfmap_data_entry { MapId = 3, KeysBytes = (uint)keys.Length, ValuesBytes = (uint)values.Length, Count = 1 }, [.. keys, .. values]);
        }),
        (ImageKinds.IpcnsSem, (w, rng) =>
        {
            int n = rng.Next(9);
            var sems = new byte[(2 * n + 7) / 8 * 8];
            for (int i = 0; i < n; i++)
                BinaryPrimitives.WriteUInt16LittleEndian(sems.AsSpan(2 * i), (ushort)rng.Next(65536));
            w.Write(new ipc_sem_entry { Desc = Desc(rng), Nsems = (uint)n }, sems);
        }),
        (ImageKinds.IpcnsMsg, (w, rng) =>
        {
            int n = rng.Next(4);
            using var queue = new MemoryStream();
            for (int i = 0; i < n; i++)
            {
                var data = Bytes(rng, 40);
                var header = new ipc_msg { Mtype = (ulong)rng.Next(1, 9), Msize = (uint)data.Length }.ToByteArray();
                var size = new byte[4];
                BinaryPrimitives.WriteInt32LittleEndian(size, header.Length);
                queue.Write(size);
                queue.Write(header);
                queue.Write(data);
                queue.Write(new byte[(data.Length + 7) / 8 * 8 - data.Length]);
            }
            w.Write(new ipc_msg_entry { Desc = Desc(rng), Qbytes = 16384, Qnum = (uint)n }, queue.ToArray());
        }),
        (ImageKinds.IpcnsShm, (w, rng) =>
        {
            var data = Bytes(rng);
            w.Write(new ipc_shm_entry { Desc = Desc(rng), Size = (ulong)data.Length }, [.. data, .. new byte[(data.Length + 3) / 4 * 4 - data.Length]]);
            w.Write(new ipc_shm_entry { Desc = Desc(rng), Size = 1 << 20, InPagemaps = true });
        }),
        (ImageKinds.GhostFile, (w, rng) =>
        {
            if (rng.Next(2) == 0)
            {
                w.Write(new ghost_file_entry { Uid = 0, Gid = 0, Mode = 0x81a4, Size = 10 }, Bytes(rng));
                return;
            }
            w.Write(new ghost_file_entry { Uid = 0, Gid = 0, Mode = 0x81a4, Chunks = true, Size = 1 << 20 });
            ulong off = 0;
            for (int i = rng.Next(4); i > 0; i--)
            {
                var data = Bytes(rng);
                w.Write(new ghost_chunk_entry { Len = (ulong)data.Length, Off = off }, data);
                off += (ulong)data.Length + 4096;
            }
        }),
    ];
}
