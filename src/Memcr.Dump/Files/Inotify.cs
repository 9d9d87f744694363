using System.Buffers.Binary;
using System.Globalization;
using Memcr.CriuImages;
using Memcr.Linux.Kernel;
using Memcr.Linux.Proc;
using Microsoft.Win32.SafeHandles;

namespace Memcr.Dump.Files;

/// <summary>
/// inotify instances: each watch as /proc/PID/fdinfo reports it (inode, device, mask, file handle)
/// with the path of the watched file, found by opening the handle; restored as a new instance
/// watching the same paths under the same watch descriptors. Events still queued at the dump are
/// not kept (neither does CRIU).
/// </summary>
internal static class Inotify
{
    // IN_ALL_EVENTS with the flags a watch keeps (IN_EXCL_UNLINK, IN_ONESHOT).
    private const uint WatchMask = 0xfff | 0x04000000 | 0x80000000;
    private const int HandleWords = 16;

    public static inotify_file_entry Dump(uint id, uint flags, fown_entry fown, FdInfo info, int pid, int fd)
    {
        var entry = new inotify_file_entry { Id = id, Flags = flags, Fown = fown };
        foreach (var line in info.LinesStartingWith("inotify wd:"))
            entry.Wd.Add(Watch(id, line, pid, fd));
        return entry;
    }

    /// <summary>"inotify wd:1 ino:1a2b sdev:800001 mask:fc6 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:2b1a0000a1b2c3d4".</summary>
    private static inotify_wd_entry Watch(uint id, string line, int pid, int fd)
    {
        var fields = line["inotify ".Length..].Split(' ', StringSplitOptions.RemoveEmptyEntries)
            .Select(f => f.Split(':', 2)).Where(kv => kv.Length == 2).ToDictionary(kv => kv[0], kv => kv[1], StringComparer.Ordinal);
        uint Hex(string key) => fields.TryGetValue(key, out var v) ? uint.Parse(v, NumberStyles.HexNumber, CultureInfo.InvariantCulture)
            : throw new CriuModeException($"fd {fd} of pid {pid}: /proc/{pid}/fdinfo/{fd} has no {key} in '{line}'");
        var handle = Convert.FromHexString(fields.GetValueOrDefault("f_handle", ""));
        var w = new inotify_wd_entry
        {
            Id = id,
            Wd = Hex("wd"),
            IIno = ulong.Parse(fields.GetValueOrDefault("ino", "0"), NumberStyles.HexNumber, CultureInfo.InvariantCulture),
            SDev = Hex("sdev"),
            Mask = Hex("mask"),
            IgnoredMask = Hex("ignored_mask"),
            FHandle = new fh_entry { Bytes = Hex("fhandle-bytes"), Type = Hex("fhandle-type") },
        };
        // The handle's bytes as CRIU keeps them: sixteen 64-bit words, zero-padded.
        var padded = new byte[HandleWords * 8];
        handle.AsSpan(0, Math.Min(handle.Length, padded.Length)).CopyTo(padded);
        for (int i = 0; i < HandleWords; i++)
            w.FHandle.Handle.Add(BinaryPrimitives.ReadUInt64LittleEndian(padded.AsSpan(i * 8)));
        w.FHandle.Path = PathOf(pid, w, handle)
            ?? throw new CriuModeException($"fd {fd} of pid {pid} is an inotify instance watching inode {w.IIno} on device {w.SDev >> 20}:{w.SDev & 0xfffff}, " +
                $"which memcr cannot find by path; pid {pid} was left running untouched");
        return w;
    }

    /// <summary>The path of a watched file: its handle opened on each mount of its device, the one whose inode matches.</summary>
    private static string? PathOf(int pid, inotify_wd_entry w, byte[] handle)
    {
        foreach (var mount in ProcFs.MountPoints(pid, w.SDev >> 20, w.SDev & 0xfffff))
        {
            string root = $"/proc/{pid}/root{(mount == "/" ? "" : mount)}";
            using var file = Open(root, w.FHandle.Type, handle);
            if (file is null)
                continue;
            string? link = new FileInfo($"/proc/self/fd/{file.DangerousGetHandle()}").LinkTarget;
            if (link is null || !link.StartsWith('/'))
                continue;
            try
            {
                if (FileCalls.Stat(link).Inode == w.IIno)
                    return link;
            }
            catch (Linux.SyscallException)
            {
                // not reachable by that path (another mount namespace, or gone meanwhile)
            }
        }
        return null;
    }

    private static SafeFileHandle? Open(string mountRoot, uint type, byte[] handle)
    {
        try
        {
            return InotifyCalls.OpenByHandle(mountRoot, type, handle);
        }
        catch (Linux.SyscallException)
        {
            return null;
        }
    }

    /// <summary>A new instance with the dumped watches, each under its dumped descriptor.</summary>
    public static SafeFileHandle Restore(inotify_file_entry e)
    {
        const int InNonblock = 0x800;
        var inotify = InotifyCalls.Init((int)e.Flags & InNonblock);
        try
        {
            foreach (var w in e.Wd.OrderBy(w => w.Wd))
            {
                string what = $"inotify watch {w.Wd} of file {e.Id}";
                string path = w.FHandle.Path is { Length: > 0 } p ? p : throw new CriuModeException($"{what} names no path (a dump made without one cannot be restored by memcr)");
                InotifyCalls.AddWatch(inotify, path, w.Mask & WatchMask, (int)w.Wd, what);
            }
            return inotify;
        }
        catch
        {
            inotify.Dispose();
            throw;
        }
    }
}
