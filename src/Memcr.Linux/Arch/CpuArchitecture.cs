using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Memcr.Linux.Arch.Arm64;
using Memcr.Linux.Arch.X64;

namespace Memcr.Linux.Arch;

/// <summary>
/// Everything that differs between CPU architectures: the general register set as
/// PTRACE_GETREGSET(NT_PRSTATUS) returns it, the syscall instruction and the syscall numbers.
/// </summary>
public abstract class CpuArchitecture
{
    public abstract string Name { get; }

    /// <summary>Architecture id written into images (ELF e_machine).</summary>
    public abstract ushort ElfMachine { get; }

    /// <summary>Size of the NT_PRSTATUS register set of a native (not compat) process.</summary>
    public abstract int RegisterSetSize { get; }

    /// <summary>The bytes of the instruction that enters the kernel.</summary>
    public abstract ReadOnlySpan<byte> SyscallInstruction { get; }

    public abstract SyscallNumbers Syscalls { get; }

    /// <summary>Sets the registers to execute syscall <paramref name="nr"/> at <paramref name="pc"/>.</summary>
    public abstract void PrepareSyscall(Span<byte> regs, ulong pc, long nr, ReadOnlySpan<ulong> args);

    public abstract long SyscallResult(ReadOnlySpan<byte> regs);

    public abstract ulong ProgramCounter(ReadOnlySpan<byte> regs);

    /// <summary>
    /// Whether the kernel may still change the syscall number of a thread that a stop interrupted
    /// in a syscall once it leaves the stop (arm64: to restart_syscall after get_signal); if so,
    /// <see cref="Ptrace.RemoteSyscall"/> lets the thread enter its syscall, skipped, to read it.
    /// </summary>
    public virtual bool SyscallNumberAfterStop => false;

    /// <summary>The syscall number a register set would enter the kernel with.</summary>
    public virtual long SyscallNumber(ReadOnlySpan<byte> regs) => throw new NotSupportedException($"{Name}: the syscall number is not read from the registers");

    public virtual void SetSyscallNumber(Span<byte> regs, long nr) => throw new NotSupportedException($"{Name}: the syscall number is not set in the registers");

    /// <summary>In a syscall-entry stop: makes the thread skip the syscall it entered.</summary>
    public virtual void SkipSyscall(Ptrace.Tracer tracer, int tid) => throw new NotSupportedException($"{Name}: a syscall is not skipped");

    /// <summary>Whether CRIU mode (memcr dump / restore -d) runs on this architecture: its thread state (FPU, TLS) is x86_64's.</summary>
    public virtual bool HasCriuMode => false;

    /// <summary>Register <paramref name="index"/> of a register set of 8-byte little-endian registers (x86_64 and arm64 alike).</summary>
    protected static ulong Register(ReadOnlySpan<byte> regs, int index) => BinaryPrimitives.ReadUInt64LittleEndian(regs[(index * 8)..]);

    protected static void SetRegister(Span<byte> regs, int index, ulong value) => BinaryPrimitives.WriteUInt64LittleEndian(regs[(index * 8)..], value);

    public static CpuArchitecture Current { get; } = RuntimeInformation.ProcessArchitecture switch
    {
        System.Runtime.InteropServices.Architecture.X64 => new X64Architecture(),
        System.Runtime.InteropServices.Architecture.Arm64 => new Arm64Architecture(),
        var other => new UnsupportedArchitecture(other.ToString()),
    };

    private sealed class UnsupportedArchitecture(string name) : CpuArchitecture
    {
        public override string Name => name;
        public override ushort ElfMachine => 0;
        public override int RegisterSetSize => throw NotSupported();
        public override ReadOnlySpan<byte> SyscallInstruction => throw NotSupported();
        public override SyscallNumbers Syscalls => throw NotSupported();
        public override void PrepareSyscall(Span<byte> regs, ulong pc, long nr, ReadOnlySpan<ulong> args) => throw NotSupported();
        public override long SyscallResult(ReadOnlySpan<byte> regs) => throw NotSupported();
        public override ulong ProgramCounter(ReadOnlySpan<byte> regs) => throw NotSupported();
        private PlatformNotSupportedException NotSupported() => new($"memcr does not support the {Name} architecture yet (x86_64 and aarch64 only)");
    }
}

/// <summary>Syscall numbers the tracer executes inside the target (each architecture fills in its table).</summary>
public sealed record SyscallNumbers
{
    public required long Read { get; init; }
    public required long Brk { get; init; }
    public required long Write { get; init; }
    public required long Close { get; init; }
    public required long Lseek { get; init; }
    public required long Mmap { get; init; }
    public required long Mprotect { get; init; }
    public required long Munmap { get; init; }
    public required long Mremap { get; init; }
    public required long Madvise { get; init; }
    public required long RtSigaction { get; init; }
    public required long RtSigprocmask { get; init; }
    public required long Ioctl { get; init; }
    public required long Getitimer { get; init; }
    public required long Setitimer { get; init; }
    public required long Getpid { get; init; }
    public required long Exit { get; init; }
    public required long Fcntl { get; init; }
    public required long Flock { get; init; }
    public required long Fchdir { get; init; }
    public required long Chdir { get; init; }
    public required long Chroot { get; init; }
    public required long Umask { get; init; }
    public required long Setpgid { get; init; }
    public required long Setsid { get; init; }
    public required long Setgroups { get; init; }
    public required long Setresuid { get; init; }
    public required long Setresgid { get; init; }
    public required long Setfsuid { get; init; }
    public required long Setfsgid { get; init; }
    public required long Capset { get; init; }
    public required long RtSigqueueinfo { get; init; }
    public required long RtTgsigqueueinfo { get; init; }
    public required long Sigaltstack { get; init; }
    public required long Personality { get; init; }
    public required long Setpriority { get; init; }
    public required long SchedSetscheduler { get; init; }
    public required long Prctl { get; init; }
    public required long SetTidAddress { get; init; }
    public required long SetRobustList { get; init; }
    public required long TimerCreate { get; init; }
    public required long TimerSettime { get; init; }
    public required long TimerGettime { get; init; }
    public required long TimerGetoverrun { get; init; }
    public required long TimerDelete { get; init; }
    public required long Openat { get; init; }
    public required long Dup3 { get; init; }
    public required long EpollCtl { get; init; }
    public required long InotifyAddWatch { get; init; }
    public required long Seccomp { get; init; }
    public required long Userfaultfd { get; init; }
    public required long Rseq { get; init; }
    public required long Membarrier { get; init; }
    public required long PidfdOpen { get; init; }
    public required long Clone3 { get; init; }
    public required long CloseRange { get; init; }
    public required long PidfdGetfd { get; init; }
    public required long IoprioSet { get; init; }
    public required long Kcmp { get; init; }
    public required long GetRobustList { get; init; }
}
