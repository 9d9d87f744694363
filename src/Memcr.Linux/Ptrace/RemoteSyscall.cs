using Memcr.Linux.Arch;
using Memcr.Linux.Memory;
using Memcr.Linux.Proc;

namespace Memcr.Linux.Ptrace;

/// <summary>
/// Executes system calls inside the target, on one of its stopped threads, using a syscall
/// instruction that already exists in the target (nothing is written into it). While it is open
/// the thread has every signal blocked; on dispose its registers and signal mask are put back and
/// it is left in a PTRACE_EVENT_STOP, so that a syscall it was in restarts as the kernel would.
/// </summary>
public sealed class RemoteSyscall : IDisposable
{
    private const int SyscallTrap = Signals.SIGTRAP | 0x80;

    private readonly Tracer _tracer;
    private readonly CpuArchitecture _arch;
    private readonly int _tid;
    private ulong _pc;
    private readonly byte[] _saved;
    private readonly byte[] _work;
    private readonly ulong _savedMask;
    private readonly Kernel.CpuAffinity? _affinity;
    private bool _moved;
    private bool _running;
    private bool _disposed;

    private RemoteSyscall(Tracer tracer, CpuArchitecture arch, int tid, ulong pc, byte[] saved, ulong savedMask, bool pin)
    {
        _affinity = pin ? Kernel.CpuAffinity.Follow(tracer.Pid, tid) : null;
        _tracer = tracer;
        _arch = arch;
        _tid = tid;
        _pc = pc;
        _saved = saved;
        _work = new byte[saved.Length];
        _savedMask = savedMask;
    }

    public int Tid => _tid;

    /// <summary>The syscall instruction used: <see cref="MoveInstruction"/> after moving the vDSO that holds it.</summary>
    public ulong Instruction => _pc;

    public void MoveInstruction(ulong syscallInstruction) => _pc = syscallInstruction;

    /// <summary>
    /// Opens remote syscalls on thread <paramref name="tid"/> (the leader when null), which must be
    /// stopped. The thread is put on the CPU this thread runs on unless <paramref name="pin"/> is
    /// false: for syscalls <see cref="Start"/>ed to run on another CPU while this one waits for others.
    /// </summary>
    public static RemoteSyscall Open(Tracer tracer, CpuArchitecture arch, ulong syscallInstruction, int? tid = null, bool pin = true)
    {
        var thread = tid is { } t ? tracer.Threads.First(x => x.Tid == t) : tracer.Leader;
        var regs = new byte[arch.RegisterSetSize];
        int size = tracer.GetRegisters(thread.Tid, regs);
        if (size != arch.RegisterSetSize)
        {
            throw new NotSupportedException(
                $"pid {tracer.Pid} has a {size}-byte register set, not the {arch.RegisterSetSize} bytes of a native {arch.Name} process (32-bit processes are not supported)");
        }
        ulong mask = tracer.GetSignalMask(thread.Tid);
        tracer.SetSignalMask(thread.Tid, ~0UL);
        var remote = new RemoteSyscall(tracer, arch, thread.Tid, syscallInstruction, regs, mask, pin);
        if (arch.SyscallNumberAfterStop && AtSyscallInstruction(tracer.Pid, arch, regs))
        {
            try
            {
                remote.SettleRestart();
            }
            catch
            {
                remote.Dispose();
                throw;
            }
        }
        return remote;
    }

    /// <summary>
    /// A thread stopped on a syscall instruction may have been stopped in that syscall, rewound to
    /// restart it; on arm64 the kernel switches x8 to restart_syscall only as the thread leaves the
    /// stop (see Arm64Architecture). The thread enters the syscall (nothing else can run first:
    /// it is on the instruction) and skips it; the number it entered with is the one to put back.
    /// </summary>
    private void SettleRestart()
    {
        _moved = true;
        _tracer.ContinueToSyscall(_tid, 0);
        WaitSyscallStop(); // entry
        _tracer.GetRegisters(_tid, _work);
        _arch.SetSyscallNumber(_saved, _arch.SyscallNumber(_work));
        _arch.SkipSyscall(_tracer, _tid);
        _tracer.ContinueToSyscall(_tid, 0);
        WaitSyscallStop(); // exit
    }

    private static bool AtSyscallInstruction(int pid, CpuArchitecture arch, byte[] regs)
    {
        var code = new byte[arch.SyscallInstruction.Length];
        using var memory = new RemoteMemory(pid);
        return TryRead(memory, arch.ProgramCounter(regs), code, code.Length) && code.AsSpan().SequenceEqual(arch.SyscallInstruction);
    }

    /// <summary>Runs one syscall in the target and returns its raw result (-errno on failure).</summary>
    public long Call(long nr, params ReadOnlySpan<ulong> args)
    {
        Start(nr, args);
        return Finish();
    }

    /// <summary>
    /// Enters one syscall in the target and lets the thread run it: <see cref="Finish"/> waits for
    /// its result. Meanwhile other threads of the target can run syscalls of their own.
    /// </summary>
    public void Start(long nr, params ReadOnlySpan<ulong> args)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_running)
            throw new InvalidOperationException($"tid {_tid} of pid {_tracer.Pid} is still in a remote syscall");
        _saved.CopyTo(_work, 0);
        _arch.PrepareSyscall(_work, _pc, nr, args);
        _tracer.SetRegisters(_tid, _work);
        _moved = true;
        _tracer.ContinueToSyscall(_tid, 0);
        WaitSyscallStop(); // entry
        _tracer.ContinueToSyscall(_tid, 0);
        _running = true;
    }

    /// <summary>Waits for the syscall <see cref="Start"/> entered to return, and gives its raw result (-errno on failure).</summary>
    public long Finish()
    {
        if (!_running)
            throw new InvalidOperationException($"no remote syscall runs on tid {_tid} of pid {_tracer.Pid}");
        _running = false;
        WaitSyscallStop(); // exit
        _tracer.GetRegisters(_tid, _work);
        return _arch.SyscallResult(_work);
    }

    private void WaitSyscallStop()
    {
        for (int attempts = 0; attempts < 1000; attempts++)
        {
            var s = _tracer.WaitStop(_tid);
            if (s.Event == 0 && s.StopSignal == SyscallTrap)
            {
                _tracer.SetState(_tid, TraceState.SyscallStop);
                return;
            }
            // Every blockable signal is blocked; SIGSTOP is not: deliver it so that its group stop
            // happens, then carry on towards the syscall stop.
            _tracer.ContinueToSyscall(_tid, s.Event == 0 ? s.StopSignal : 0);
        }
        throw new InvalidOperationException($"tid {_tid} of pid {_tracer.Pid} never reached a syscall stop");
    }

    /// <summary>
    /// Finds a syscall instruction in the target: first in the vDSO, then in executable file mappings.
    /// </summary>
    public static ulong FindSyscallInstruction(int pid, IReadOnlyList<Vma> vmas, CpuArchitecture arch, RemoteMemory memory)
    {
        var candidates = vmas.Where(v => v.Path == "[vdso]")
            .Concat(vmas.Where(v => v.Path != "[vdso]" && MayHoldSyscallInstruction(v)));
        var insn = arch.SyscallInstruction;
        var buffer = new byte[64 * 1024];
        foreach (var vma in candidates)
        {
            for (ulong at = vma.Start; at < vma.End; at += (ulong)buffer.Length - (ulong)insn.Length)
            {
                int len = (int)Math.Min((ulong)buffer.Length, vma.End - at);
                if (!TryRead(memory, at, buffer, len))
                    break;
                // On arm64 instructions are 4-byte aligned; x86 may start anywhere.
                int step = insn.Length == 4 ? 4 : 1;
                for (int i = 0; i + insn.Length <= len; i += step)
                {
                    if (buffer.AsSpan(i, insn.Length).SequenceEqual(insn))
                        return at + (ulong)i;
                }
                if (at + (ulong)len >= vma.End)
                    break;
            }
        }
        throw new InvalidOperationException($"no syscall instruction found in the code of pid {pid}");
    }

    /// <summary>The mappings <see cref="FindSyscallInstruction"/> looks in: the vDSO, then readable code of files.</summary>
    public static bool MayHoldSyscallInstruction(Vma v) => v.Path == "[vdso]" || (v.IsFile && (v.Protection & Protection.Exec) != 0 && v.IsReadable);

    private static unsafe bool TryRead(RemoteMemory memory, ulong at, byte[] buffer, int len)
    {
        fixed (byte* p = buffer)
        {
            try
            {
                memory.ReadV([new Transfer(at, (nint)p, len)]);
                return true;
            }
            catch (SyscallException)
            {
                return false;
            }
        }
    }

    /// <summary>Puts the thread back exactly as we found it.</summary>
    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        if (_running)
            Finish();
        if (_moved)
        {
            // Return to a PTRACE_EVENT_STOP inside get_signal before restoring the registers: leaving
            // from there, the kernel applies syscall restart to the original registers.
            _tracer.Interrupt(_tid);
            _tracer.Continue(_tid, 0);
            var thread = _tracer.Threads.First(t => t.Tid == _tid);
            _tracer.WaitForEventStop(thread);
            _tracer.SetRegisters(_tid, _saved);
        }
        _tracer.SetSignalMask(_tid, _savedMask);
        _affinity?.Dispose();
    }
}
