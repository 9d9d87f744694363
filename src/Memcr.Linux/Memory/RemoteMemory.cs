using Microsoft.Win32.SafeHandles;

namespace Memcr.Linux.Memory;

/// <summary>A range of the target's address space and where its bytes are (or go) in our memory.</summary>
public readonly record struct Transfer(ulong Remote, nint Local, int Length);

/// <summary>
/// Copies memory between us and another process: process_vm_readv/writev for pages the target can
/// read/write itself, /proc/PID/mem for the rest (it forces through PROT_READ and PROT_NONE).
/// </summary>
public sealed class RemoteMemory : IDisposable
{
    // IOV_MAX: process_vm_readv/writev refuse more iovecs than this per call.
    private const int IovMax = 1024;

    private readonly int _pid;
    private readonly string _memPath;
    private SafeFileHandle? _mem;
    private readonly Lock _memLock = new();

    public RemoteMemory(int pid)
    {
        _pid = pid;
        _memPath = $"/proc/{pid}/mem";
    }

    public int Pid => _pid;

    /// <summary>Reads every transfer fully with process_vm_readv, batching up to IOV_MAX ranges a call.</summary>
    public unsafe void ReadV(ReadOnlySpan<Transfer> transfers) => Vectored(transfers, write: false);

    /// <summary>Writes every transfer fully with process_vm_writev (target pages must be writable).</summary>
    public unsafe void WriteV(ReadOnlySpan<Transfer> transfers) => Vectored(transfers, write: true);

    private unsafe void Vectored(ReadOnlySpan<Transfer> transfers, bool write)
    {
        int n = Math.Min(transfers.Length, IovMax);
        var local = stackalloc Interop.IoVec[n];
        var remote = stackalloc Interop.IoVec[n];
        int index = 0;
        while (index < transfers.Length)
        {
            int count = Math.Min(transfers.Length - index, IovMax);
            long expected = 0;
            for (int i = 0; i < count; i++)
            {
                var t = transfers[index + i];
                local[i] = new Interop.IoVec { Base = t.Local, Length = (nuint)t.Length };
                remote[i] = new Interop.IoVec { Base = (nint)t.Remote, Length = (nuint)t.Length };
                expected += t.Length;
            }
            nint done = write
                ? Interop.Libc.process_vm_writev(_pid, local, (nuint)count, remote, (nuint)count, 0)
                : Interop.Libc.process_vm_readv(_pid, local, (nuint)count, remote, (nuint)count, 0);
            if (done < 0)
            {
                throw new SyscallException(write ? "process_vm_writev" : "process_vm_readv",
                    $"pid {_pid} [0x{transfers[index].Remote:x}...]", Errno.Last);
            }
            if (done == expected)
            {
                index += count;
                continue;
            }
            // A partial transfer stops at the first range that failed: finish the ranges before it,
            // then retry from the failing one alone so that its error is reported.
            long left = done;
            int consumed = 0;
            while (consumed < count && left >= transfers[index + consumed].Length)
            {
                left -= transfers[index + consumed].Length;
                consumed++;
            }
            if (left > 0)
            {
                var t = transfers[index + consumed];
                var rest = new Transfer(t.Remote + (ulong)left, t.Local + (nint)left, t.Length - (int)left);
                Vectored([rest], write);
                consumed++;
            }
            else if (consumed == 0)
            {
                throw new SyscallException(write ? "process_vm_writev" : "process_vm_readv",
                    $"pid {_pid} at 0x{transfers[index].Remote:x}", Errno.EFAULT);
            }
            index += consumed;
        }
    }

    /// <summary>Reads through /proc/PID/mem (works on PROT_NONE and unreadable pages).</summary>
    public unsafe void ReadMem(in Transfer t)
    {
        var fd = OpenMem();
        int off = 0;
        while (off < t.Length)
        {
            nint got = Interop.Libc.pread((int)fd.DangerousGetHandle(), (void*)(t.Local + off), (nuint)(t.Length - off), (long)(t.Remote + (ulong)off));
            if (got < 0)
                throw Errno.Error("pread", $"{_memPath} at 0x{t.Remote + (ulong)off:x}");
            if (got == 0)
                throw new SyscallException("pread", $"{_memPath} at 0x{t.Remote + (ulong)off:x}", Errno.EIO, "short read");
            off += (int)got;
        }
    }

    /// <summary>Writes through /proc/PID/mem, which forces writes into read-only and PROT_NONE pages.</summary>
    public unsafe void WriteMem(in Transfer t)
    {
        var fd = OpenMem();
        int off = 0;
        while (off < t.Length)
        {
            nint put = Interop.Libc.pwrite((int)fd.DangerousGetHandle(), (void*)(t.Local + off), (nuint)(t.Length - off), (long)(t.Remote + (ulong)off));
            if (put < 0)
                throw Errno.Error("pwrite", $"{_memPath} at 0x{t.Remote + (ulong)off:x}");
            if (put == 0)
                throw new SyscallException("pwrite", $"{_memPath} at 0x{t.Remote + (ulong)off:x}", Errno.EIO, "short write");
            off += (int)put;
        }
    }

    private SafeFileHandle OpenMem()
    {
        lock (_memLock)
        {
            if (_mem is null)
            {
                int fd = Interop.Libc.open(_memPath, Interop.Libc.O_RDWR | Interop.Libc.O_CLOEXEC, 0);
                if (fd < 0)
                    throw Errno.Error("open", _memPath);
                _mem = new SafeFileHandle(fd, ownsHandle: true);
            }
            return _mem;
        }
    }

    public void Dispose() => _mem?.Dispose();
}
