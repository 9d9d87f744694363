using System.Runtime.InteropServices;
using System.Text;
using Memcr.Linux.Arch;
using Memcr.Linux.Memory;

namespace Memcr.Linux.Ptrace;

/// <summary>
/// System calls run by one stopped thread of a traced process (see <see cref="RemoteSyscall"/>),
/// with a scratch area in that process's memory for arguments passed by pointer: strings, structs
/// given to the kernel and buffers it fills. The scratch area is the caller's to map and unmap.
/// </summary>
public sealed class RemoteTask : IDisposable
{
    private readonly RemoteSyscall _syscall;
    private readonly RemoteMemory _memory;
    private int _used;

    private RemoteTask(RemoteSyscall syscall, RemoteMemory memory, CpuArchitecture arch, int pid)
    {
        _syscall = syscall;
        _memory = memory;
        Arch = arch;
        Pid = pid;
    }

    public CpuArchitecture Arch { get; }

    public SyscallNumbers Nr => Arch.Syscalls;

    public int Pid { get; }

    public int Tid => _syscall.Tid;

    /// <summary>Where the scratch area is in the process, 0 when it has none yet.</summary>
    public ulong Scratch { get; private set; }

    public int ScratchSize { get; private set; }

    public static RemoteTask Open(Tracer tracer, CpuArchitecture arch, RemoteMemory memory, ulong syscallInstruction, int? tid = null) =>
        new(RemoteSyscall.Open(tracer, arch, syscallInstruction, tid), memory, arch, tracer.Pid);

    public ulong Instruction => _syscall.Instruction;

    /// <summary>After the vDSO that holds the syscall instruction has been moved.</summary>
    public void MoveInstruction(ulong syscallInstruction) => _syscall.MoveInstruction(syscallInstruction);

    /// <summary>Uses [address, address + size) of the process, already mapped read-write, as scratch.</summary>
    public void UseScratch(ulong address, int size)
    {
        Scratch = address;
        ScratchSize = size;
        _used = 0;
    }

    /// <summary>Maps a fresh scratch area (at <paramref name="at"/> if given) and uses it.</summary>
    public ulong MapScratch(int size, ulong at = 0)
    {
        const int ProtRw = 3, MapPrivateAnonymous = 0x22, MapFixedNoReplace = 0x100000;
        ulong address = (ulong)Call("mmap", Nr.Mmap, at, (ulong)size, ProtRw, (ulong)(MapPrivateAnonymous | (at != 0 ? MapFixedNoReplace : 0)), ulong.MaxValue, 0);
        UseScratch(address, size);
        return address;
    }

    public void UnmapScratch()
    {
        if (Scratch == 0)
            return;
        Call("munmap", Nr.Munmap, Scratch, (ulong)ScratchSize);
        Scratch = 0;
        ScratchSize = 0;
    }

    /// <summary>Runs a syscall and returns its raw result (-errno on failure).</summary>
    public long Raw(long nr, params ReadOnlySpan<ulong> args) => _syscall.Call(nr, args);

    /// <summary>Runs a syscall; a failure throws, naming <paramref name="name"/>, the process and the errno.</summary>
    public long Call(string name, long nr, params ReadOnlySpan<ulong> args)
    {
        long r = _syscall.Call(nr, args);
        if (r < 0 && r > -4096)
            throw new SyscallException(name, $"pid {Pid} (in the process, tid {Tid})", (int)-r);
        return r;
    }

    /// <summary>Frees everything put in the scratch area so far.</summary>
    public void ResetScratch() => _used = 0;

    /// <summary>Copies <paramref name="data"/> into the scratch area; returns its address in the process.</summary>
    public unsafe ulong Put(ReadOnlySpan<byte> data)
    {
        ulong at = Reserve(data.Length);
        if (data.Length > 0)
        {
            fixed (byte* p = data)
                _memory.WriteV([new Transfer(at, (nint)p, data.Length)]);
        }
        return at;
    }

    public ulong Put<T>(in T value) where T : unmanaged => Put(MemoryMarshal.AsBytes(new ReadOnlySpan<T>(in value)));

    /// <summary>A NUL-terminated UTF-8 string in the scratch area.</summary>
    public ulong PutString(string s)
    {
        var bytes = new byte[Encoding.UTF8.GetByteCount(s) + 1];
        Encoding.UTF8.GetBytes(s, bytes);
        return Put(bytes);
    }

    /// <summary>Room for <paramref name="size"/> bytes (zeroed) in the scratch area, 8-byte aligned.</summary>
    public ulong Reserve(int size)
    {
        if (Scratch == 0)
            throw new InvalidOperationException($"pid {Pid}: no scratch area mapped for remote syscall arguments");
        int at = (_used + 7) & ~7;
        if (at + size > ScratchSize)
            throw new InvalidOperationException($"pid {Pid}: remote syscall arguments need more than the {ScratchSize}-byte scratch area");
        _used = at + size;
        if (size > 0)
            Write(Scratch + (ulong)at, new byte[size]);
        return Scratch + (ulong)at;
    }

    /// <summary>Reads <paramref name="size"/> bytes of the process (a buffer a syscall filled).</summary>
    public unsafe byte[] Read(ulong address, int size)
    {
        var data = new byte[size];
        if (size > 0)
        {
            fixed (byte* p = data)
                _memory.ReadV([new Transfer(address, (nint)p, size)]);
        }
        return data;
    }

    public T Read<T>(ulong address) where T : unmanaged => MemoryMarshal.Read<T>(Read(address, Marshal.SizeOf<T>()));

    public unsafe void Write(ulong address, ReadOnlySpan<byte> data)
    {
        fixed (byte* p = data)
            _memory.WriteV([new Transfer(address, (nint)p, data.Length)]);
    }

    /// <summary>Puts the thread back as it was (its registers, its signal mask) in a PTRACE_EVENT_STOP.</summary>
    public void Dispose() => _syscall.Dispose();
}
