using Google.Protobuf;
using Google.Protobuf.Reflection;

namespace Memcr.CriuImages;

/// <summary>How the entries of an image are laid out after its magic.</summary>
public enum ImageLayout
{
    /// <summary>Entries of one message type, each a 32-bit length and the message, maybe raw bytes after it.</summary>
    Entries,

    /// <summary>pagemap-PID.img: a pagemap_head entry, then pagemap_entry entries.</summary>
    Pagemap,

    /// <summary>ghost-file-ID.img: a ghost_file_entry, then the file's bytes (or chunk entries, each with its bytes).</summary>
    GhostFile,
}

/// <summary>What raw bytes follow an entry's message ("extra" in crit's JSON).</summary>
public enum ExtraPayload
{
    None,

    /// <summary>pipe_data_entry.bytes bytes (pipes-data.img, fifo-data.img).</summary>
    PipeData,

    /// <summary>sk_packet_entry.length bytes (sk-queues.img).</summary>
    SocketQueue,

    /// <summary>inq_len then outq_len bytes (tcp-stream-INO.img).</summary>
    TcpQueues,

    /// <summary>keys_bytes + values_bytes bytes (bpfmap-data.img).</summary>
    BpfMapData,

    /// <summary>nsems 16-bit values, padded to 8 bytes (ipcns-sem-N.img).</summary>
    SemaphoreSet,

    /// <summary>qnum messages, each a length-prefixed ipc_msg and msize bytes padded to 8 (ipcns-msg-N.img).</summary>
    MessageQueue,

    /// <summary>size bytes padded to 4, unless the segment's pages are in pagemaps (ipcns-shm-N.img).</summary>
    SharedMemory,
}

/// <summary>
/// One kind of CRIU image: its name (as crit prints it in "magic"), its magic number, its file name,
/// and the message its entries hold. <see cref="ImageKinds"/> has every kind CRIU 4.2 writes.
/// </summary>
public sealed class ImageKind
{
    internal ImageKind(string name, uint magic, string fileName, MessageDescriptor? entry, ImageLayout layout = ImageLayout.Entries,
        ExtraPayload extra = ExtraPayload.None, bool service = false, bool critHandles = true)
    {
        Name = name;
        Magic = magic;
        FileName = fileName;
        Entry = entry;
        Layout = layout;
        Extra = extra;
        IsService = service;
        CritHandles = critHandles;
    }

    /// <summary>The magic's name without _MAGIC, as crit names the image: "CORE", "PAGEMAP".</summary>
    public string Name { get; }

    /// <summary>The image's own magic: the second 32-bit word of the file (the only one for inventory.img).</summary>
    public uint Magic { get; }

    /// <summary>CRIU's file name, with {0} for the id where it has one: "core-{0}.img".</summary>
    public string FileName { get; }

    /// <summary>The message every entry holds (for pagemap, every entry after the head).</summary>
    public MessageDescriptor? Entry { get; }

    public ImageLayout Layout { get; }

    public ExtraPayload Extra { get; }

    /// <summary>Service files (stats, irmap cache) start with IMG_SERVICE instead of IMG_COMMON.</summary>
    public bool IsService { get; }

    /// <summary>False for kinds CRIU writes that crit 4.2 has no handler for (we read them anyway).</summary>
    public bool CritHandles { get; }

    /// <summary>Inventory is the one image without the common magic in front.</summary>
    public bool HasCommonMagic => Magic != ImageMagic.Inventory;

    /// <summary>The magic written before <see cref="Magic"/>, or null for inventory.img.</summary>
    public uint? LeadingMagic => HasCommonMagic ? (IsService ? ImageMagic.Service : ImageMagic.Common) : null;

    /// <summary>The file name for one id: ImageKinds.Core.FileNameFor(42) is "core-42.img".</summary>
    public string FileNameFor(long id) => string.Format(System.Globalization.CultureInfo.InvariantCulture, FileName, id);

    /// <summary>The file name for an id CRIU prints in hex (tcp-stream, ghost-file).</summary>
    public string FileNameForHex(long id) => FileName.Replace("{0}", id.ToString("x", System.Globalization.CultureInfo.InvariantCulture), StringComparison.Ordinal);

    /// <summary>The parser of <see cref="Entry"/>.</summary>
    public MessageParser? Parser => Entry?.Parser;

    public override string ToString() => $"{Name} (0x{Magic:x8})";
}
