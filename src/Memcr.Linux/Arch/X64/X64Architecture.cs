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

    // arch/x86/entry/syscalls/syscall_64.tbl
    private static readonly SyscallNumbers Numbers = new()
    {
        Read = 0, Write = 1, Brk = 12, Close = 3, Lseek = 8, Mmap = 9, Mprotect = 10, Munmap = 11, RtSigaction = 13,
        RtSigprocmask = 14, Ioctl = 16, Mremap = 25, Madvise = 28, Getitimer = 36, Setitimer = 38, Getpid = 39,
        Exit = 60, Fcntl = 72, Flock = 73, Chdir = 80, Fchdir = 81, Umask = 95, Setpgid = 109, Setsid = 112, Setgroups = 116,
        Setresuid = 117, Setresgid = 119, Setfsuid = 122, Setfsgid = 123, Capset = 126, RtSigqueueinfo = 129,
        Sigaltstack = 131, Personality = 135, Setpriority = 141, SchedSetscheduler = 144, Prctl = 157, Chroot = 161,
        SetTidAddress = 218, TimerCreate = 222, TimerSettime = 223, TimerGettime = 224, TimerGetoverrun = 225,
        TimerDelete = 226, EpollCtl = 233, InotifyAddWatch = 254, Openat = 257, SetRobustList = 273, Dup3 = 292,
        RtTgsigqueueinfo = 297, Seccomp = 317, Userfaultfd = 323, Membarrier = 324, Rseq = 334, PidfdOpen = 434, Clone3 = 435, CloseRange = 436,
        PidfdGetfd = 438, IoprioSet = 251, Kcmp = 312, GetRobustList = 274,
    };

    public override string Name => "x86_64";

    public override ushort ElfMachine => 62; // EM_X86_64

    public override int RegisterSetSize => 27 * 8;

    public override ReadOnlySpan<byte> SyscallInstruction => [0x0f, 0x05];

    public override SyscallNumbers Syscalls => Numbers;

    public override bool HasCriuMode => true;

    public override void PrepareSyscall(Span<byte> regs, ulong pc, long nr, ReadOnlySpan<ulong> args)
    {
        SetRegister(regs, Rip, pc);
        SetRegister(regs, Rax, (ulong)nr);
        // orig_rax = -1 keeps the kernel's syscall-restart logic away from our registers when the
        // thread leaves a stop that interrupted one of its own syscalls (arch/x86/kernel/signal.c).
        SetRegister(regs, OrigRax, ulong.MaxValue);
        ReadOnlySpan<int> argRegs = [Rdi, Rsi, Rdx, R10, R8, R9];
        for (int i = 0; i < argRegs.Length; i++)
            SetRegister(regs, argRegs[i], i < args.Length ? args[i] : 0);
    }

    public override long SyscallResult(ReadOnlySpan<byte> regs) => (long)Register(regs, Rax);

    public override ulong ProgramCounter(ReadOnlySpan<byte> regs) => Register(regs, Rip);
}
