using System.Buffers.Binary;

namespace Memcr.Linux.Arch.Arm64;

/// <summary>
/// arm64 (AArch64): struct user_pt_regs (arch/arm64/include/uapi/asm/ptrace.h), x0-x30, sp, pc
/// and pstate, 8 bytes each. A syscall is <c>svc #0</c> with its number in x8, its arguments in
/// x0-x5 and its result in x0; the numbers are those of the generic table
/// (include/uapi/asm-generic/unistd.h).
/// </summary>
/// <remarks>
/// Restarting a syscall that a stop interrupted: x0 holds the syscall's result on its way out, so
/// the first argument would be gone, but arch/arm64/kernel/signal.c (do_signal) acts before
/// get_signal, where every ptrace stop of ours happens: for -ERESTARTSYS, -ERESTARTNOINTR,
/// -ERESTARTNOHAND and -ERESTART_RESTARTBLOCK it has already put the first argument back into x0
/// (from orig_x0) and moved pc back onto the <c>svc</c>, and it has forgotten the syscall so that
/// it is not restarted twice. Registers read in such a stop are the restart itself; putting them
/// back there restarts it. Only -ERESTART_RESTARTBLOCK (a relative sleep, a futex wait with a
/// timeout) also needs x8 switched to restart_syscall, and the kernel does that after get_signal,
/// only if pc is still where it left it: <see cref="SyscallNumberAfterStop"/> makes RemoteSyscall
/// let the thread enter its syscall (skipped there) to read which one it restarts.
/// </remarks>
public sealed class Arm64Architecture : CpuArchitecture
{
    private const int X8 = 8;
    private const int Pc = 32;

    // NT_ARM_SYSTEM_CALL (include/uapi/linux/elf.h): the syscall a thread in a syscall-entry stop is
    // about to run; -1 skips it.
    private const int NtArmSystemCall = 0x404;

    // include/uapi/asm-generic/unistd.h (64-bit: mmap is __NR3264_mmap, fcntl __NR3264_fcntl).
    private static readonly SyscallNumbers Numbers = new()
    {
        Read = 63, Write = 64, Brk = 214, Close = 57, Lseek = 62, Mmap = 222, Mprotect = 226, Munmap = 215, RtSigaction = 134,
        RtSigprocmask = 135, Ioctl = 29, Mremap = 216, Madvise = 233, Getitimer = 102, Setitimer = 103, Getpid = 172,
        Exit = 93, Fcntl = 25, Flock = 32, Chdir = 49, Fchdir = 50, Umask = 166, Setpgid = 154, Setsid = 157, Setgroups = 159,
        Setresuid = 147, Setresgid = 149, Setfsuid = 151, Setfsgid = 152, Capset = 91, RtSigqueueinfo = 138,
        Sigaltstack = 132, Personality = 92, Setpriority = 140, SchedSetscheduler = 119, Prctl = 167, Chroot = 51,
        SetTidAddress = 96, TimerCreate = 107, TimerSettime = 110, TimerGettime = 108, TimerGetoverrun = 109,
        TimerDelete = 111, EpollCtl = 21, InotifyAddWatch = 27, Openat = 56, SetRobustList = 99, GetRobustList = 100, Dup3 = 24,
        RtTgsigqueueinfo = 240, Seccomp = 277, Userfaultfd = 282, Membarrier = 283, Rseq = 293, PidfdOpen = 434, Clone3 = 435, CloseRange = 436,
        PidfdGetfd = 438, IoprioSet = 30, Kcmp = 272,
    };

    public override string Name => "aarch64";

    public override ushort ElfMachine => 183; // EM_AARCH64

    public override int RegisterSetSize => 34 * 8;

    public override ReadOnlySpan<byte> SyscallInstruction => [0x01, 0x00, 0x00, 0xd4]; // svc #0

    public override SyscallNumbers Syscalls => Numbers;

    public override void PrepareSyscall(Span<byte> regs, ulong pc, long nr, ReadOnlySpan<ulong> args)
    {
        SetRegister(regs, Pc, pc);
        SetRegister(regs, X8, (ulong)nr);
        for (int i = 0; i < 6; i++)
            SetRegister(regs, i, i < args.Length ? args[i] : 0);
    }

    public override long SyscallResult(ReadOnlySpan<byte> regs) => (long)Register(regs, 0);

    public override ulong ProgramCounter(ReadOnlySpan<byte> regs) => Register(regs, Pc);

    public override bool SyscallNumberAfterStop => true;

    public override long SyscallNumber(ReadOnlySpan<byte> regs) => (long)Register(regs, X8);

    public override void SetSyscallNumber(Span<byte> regs, long nr) => SetRegister(regs, X8, (ulong)nr);

    public override void SkipSyscall(Ptrace.Tracer tracer, int tid)
    {
        Span<byte> none = stackalloc byte[4];
        BinaryPrimitives.WriteInt32LittleEndian(none, -1);
        tracer.SetRegisterSet(tid, NtArmSystemCall, none);
    }
}
