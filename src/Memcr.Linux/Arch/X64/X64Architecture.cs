using System.Buffers.Binary;

namespace Memcr.Linux.Arch.X64;

/// <summary>x86_64: struct user_regs_struct (arch/x86/include/asm/user_64.h), 27 registers of 8 bytes.</summary>
public sealed class X64Architecture : CpuArchitecture
{
    // Register indexes in user_regs_struct.
    private const int R10 = 7;
    private const int R9 = 8;
    private const int R8 = 9;
    private const int Rax = 10;
    private const int Rdx = 12;
    private const int Rsi = 13;
    private const int Rdi = 14;
    private const int OrigRax = 15;
    private const int Rip = 16;

    private static readonly SyscallNumbers Numbers = new(Madvise: 28, Getpid: 39);

    public override string Name => "x86_64";

    public override ushort ElfMachine => 62; // EM_X86_64

    public override int RegisterSetSize => 27 * 8;

    public override ReadOnlySpan<byte> SyscallInstruction => [0x0f, 0x05];

    public override SyscallNumbers Syscalls => Numbers;

    public override void PrepareSyscall(Span<byte> regs, ulong pc, long nr, ReadOnlySpan<ulong> args)
    {
        Set(regs, Rip, pc);
        Set(regs, Rax, (ulong)nr);
        // orig_rax = -1 keeps the kernel's syscall-restart logic away from our registers when the
        // thread leaves a stop that interrupted one of its own syscalls (arch/x86/kernel/signal.c).
        Set(regs, OrigRax, ulong.MaxValue);
        ReadOnlySpan<int> argRegs = [Rdi, Rsi, Rdx, R10, R8, R9];
        for (int i = 0; i < argRegs.Length; i++)
            Set(regs, argRegs[i], i < args.Length ? args[i] : 0);
    }

    public override long SyscallResult(ReadOnlySpan<byte> regs) => (long)Get(regs, Rax);

    public override ulong ProgramCounter(ReadOnlySpan<byte> regs) => Get(regs, Rip);

    private static ulong Get(ReadOnlySpan<byte> regs, int index) => BinaryPrimitives.ReadUInt64LittleEndian(regs[(index * 8)..]);

    private static void Set(Span<byte> regs, int index, ulong value) => BinaryPrimitives.WriteUInt64LittleEndian(regs[(index * 8)..], value);
}
