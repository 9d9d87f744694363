using System.Runtime.InteropServices;
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

    public static CpuArchitecture Current { get; } = RuntimeInformation.ProcessArchitecture switch
    {
        System.Runtime.InteropServices.Architecture.X64 => new X64Architecture(),
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
        private PlatformNotSupportedException NotSupported() => new($"memcr does not support the {Name} architecture yet (x86_64 only)");
    }
}

/// <summary>Syscall numbers the tracer executes inside the target.</summary>
public sealed record SyscallNumbers(long Madvise, long Getpid);
