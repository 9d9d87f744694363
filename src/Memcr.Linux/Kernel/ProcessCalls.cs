using Memcr.Linux.Ptrace;
using Microsoft.Win32.SafeHandles;

namespace Memcr.Linux.Kernel;

/// <summary>kcmp(2) resource types.</summary>
public enum KcmpType
{
    File = 0,
    Vm = 1,
    Files = 2,
    Fs = 3,
    Sighand = 4,
    Io = 5,
    Sysvsem = 6,
}

/// <summary>Calls on other processes: comparing their resources, their limits, taking their descriptors.</summary>
public static class ProcessCalls
{
    /// <summary>Whether two processes share a resource (kcmp(2): needs ptrace access to both).</summary>
    public static bool Same(KcmpType type, int pid1, int pid2, long a = 0, long b = 0)
    {
        long r = Interop.Libc.syscall(Arch.CpuArchitecture.Current.Syscalls.Kcmp, pid1, pid2, (long)type, a, b);
        if (r < 0)
            throw Errno.Error("kcmp", $"pids {pid1} and {pid2}");
        return r == 0;
    }

    /// <summary>Whether fd <paramref name="fd1"/> of one process and fd <paramref name="fd2"/> of another are one open file description.</summary>
    public static bool SameFile(int pid1, int fd1, int pid2, int fd2) => Same(KcmpType.File, pid1, pid2, fd1, fd2);

    /// <summary>
    /// Puts the calling thread's reads ahead of other I/O (ioprio_set, real-time class): the I/O
    /// scheduler (mq-deadline here) otherwise holds a small read behind a stream of large
    /// sequential ones until its deadline, half a second. False where this is not permitted
    /// (it needs CAP_SYS_ADMIN or CAP_SYS_NICE).
    /// </summary>
    public static bool RaiseThreadIoPriority()
    {
        const long WhoProcess = 1, ClassRealTime = 1, Level = 4;
        return Interop.Libc.syscall(Arch.CpuArchitecture.Current.Syscalls.IoprioSet, WhoProcess, 0, (ClassRealTime << 13) | Level, 0, 0) == 0;
    }

    public static SafeFileHandle PidfdOpen(int pid)
    {
        int fd = Interop.Libc.pidfd_open(pid, 0);
        if (fd < 0)
            throw Errno.Error("pidfd_open", $"pid {pid}");
        return new SafeFileHandle(fd, ownsHandle: true);
    }

    /// <summary>A duplicate of fd <paramref name="fd"/> of another process (pidfd_getfd(2)): the same open file description.</summary>
    public static SafeFileHandle TakeFd(SafeFileHandle pidfd, int pid, int fd)
    {
        int r = Interop.Libc.pidfd_getfd((int)pidfd.DangerousGetHandle(), fd, 0);
        if (r < 0)
            throw Errno.Error("pidfd_getfd", $"fd {fd} of pid {pid}");
        return new SafeFileHandle(r, ownsHandle: true);
    }

    public static unsafe void SetLimit(int pid, int resource, ulong current, ulong max)
    {
        var limit = new Interop.RLimit { Current = current, Max = max };
        if (Interop.Libc.prlimit(pid, resource, &limit, null) < 0)
            throw Errno.Error("prlimit", $"pid {pid} (resource {resource}: {current}/{max})");
    }

    /// <summary>The robust futex list of a thread (get_robust_list(2)): head address and length.</summary>
    public static unsafe (ulong Head, ulong Length) GetRobustList(int tid)
    {
        ulong head;
        ulong length;
        if (Interop.Libc.syscall(Arch.CpuArchitecture.Current.Syscalls.GetRobustList, tid, (long)&head, (long)&length, 0, 0) < 0)
            throw Errno.Error("get_robust_list", $"tid {tid}");
        return (head, length);
    }

    /// <summary>The session of a process, or -1 when it has gone.</summary>
    public static int SessionOf(int pid) => Interop.Libc.getsid(pid);

    public static int GroupOf(int pid) => Interop.Libc.getpgid(pid);

    /// <summary>Makes <paramref name="pgrp"/> the foreground process group of the terminal <paramref name="fd"/>.</summary>
    public static void SetForegroundGroup(SafeFileHandle fd, int pgrp)
    {
        if (Interop.Libc.tcsetpgrp((int)fd.DangerousGetHandle(), pgrp) < 0)
            throw Errno.Error("tcsetpgrp", $"process group {pgrp}");
    }

    public static bool IsTerminal(int fd) => Interop.Libc.isatty(fd) == 1;

    /// <summary>
    /// Starts <paramref name="path"/> with posix_spawn, not as a .NET Process: the runtime then
    /// never waits for it, so that its ptrace stops reach only our tracer thread.
    /// </summary>
    public static unsafe int Spawn(string path, IReadOnlyList<string> args)
    {
        var strings = new List<nint>();
        try
        {
            nint Utf8(string s)
            {
                nint p = System.Runtime.InteropServices.Marshal.StringToCoTaskMemUTF8(s);
                strings.Add(p);
                return p;
            }
            var argv = new byte*[args.Count + 2];
            argv[0] = (byte*)Utf8(path);
            for (int i = 0; i < args.Count; i++)
                argv[i + 1] = (byte*)Utf8(args[i]);
            var env = Environment.GetEnvironmentVariables();
            var envp = new byte*[env.Count + 1];
            int e = 0;
            foreach (System.Collections.DictionaryEntry kv in env)
                envp[e++] = (byte*)Utf8($"{kv.Key}={kv.Value}");
            int pid;
            fixed (byte** a = argv)
            fixed (byte** ev = envp)
            {
                int r = Interop.Libc.posix_spawn(&pid, argv[0], 0, 0, a, ev);
                if (r != 0)
                    throw new SyscallException("posix_spawn", path, r);
            }
            return pid;
        }
        finally
        {
            foreach (var p in strings)
                System.Runtime.InteropServices.Marshal.FreeCoTaskMem(p);
        }
    }

    /// <summary>Waits for a child of ours (not traced) to end; returns its wait status.</summary>
    public static unsafe WaitStatus WaitChild(int pid)
    {
        int status;
        while (true)
        {
            int r = Interop.Libc.waitpid(pid, &status, Interop.Libc.__WALL);
            if (r == pid)
                return new WaitStatus(status);
            if (r < 0 && Errno.Last != Errno.EINTR)
                throw Errno.Error("waitpid", $"pid {pid}");
        }
    }

    /// <summary>Stops a process as SIGSTOP does.</summary>
    public static void Stop(int pid)
    {
        if (Interop.Libc.kill(pid, 19) < 0)
            throw Errno.Error("kill(SIGSTOP)", $"pid {pid}");
    }

    /// <summary>Blocks forever (the restore helper's life until it is used and killed).</summary>
    public static void Pause()
    {
        while (true)
            Interop.Libc.pause();
    }

    /// <summary>CLOCK_MONOTONIC (1) or CLOCK_BOOTTIME (7) now.</summary>
    public static unsafe (long Seconds, long Nanoseconds) Clock(int clock)
    {
        long* ts = stackalloc long[2];
        if (Interop.Libc.clock_gettime(clock, ts) < 0)
            throw Errno.Error("clock_gettime", $"clock {clock}");
        return (ts[0], ts[1]);
    }
}
