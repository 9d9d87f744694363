using Memcr.Linux.Ptrace;
using Memcr.Linux.Proc;

namespace Memcr.Tests;

public sealed class ProcParserTests
{
    [Fact]
    public void MapsLine_IsParsed()
    {
        var v = Vma.ParseMapsLine("7f2c1a000000-7f2c1a021000 rw-p 00001000 08:01 131090                     /usr/lib/x86_64-linux-gnu/libc.so.6");
        Assert.Equal(0x7f2c1a000000UL, v.Start);
        Assert.Equal(0x21000UL, v.Length);
        Assert.Equal(Protection.Read | Protection.Write, v.Protection);
        Assert.False(v.Shared);
        Assert.Equal(0x1000UL, v.Offset);
        Assert.Equal(131090UL, v.Inode);
        Assert.True(v.IsFile);

        var anon = Vma.ParseMapsLine("7ffd5c9e0000-7ffd5ca01000 rw-p 00000000 00:00 0                          [stack]");
        Assert.True(anon.IsStack);
        var none = Vma.ParseMapsLine("7f00-8f00 ---s 00000000 00:01 5");
        Assert.Equal(Protection.None, none.Protection);
        Assert.True(none.Shared);
        Assert.Equal("", none.Path);
        var spaced = Vma.ParseMapsLine("1000-2000 r--p 00000000 08:01 77 /tmp/a file (deleted)");
        Assert.Equal("/tmp/a file (deleted)", spaced.Path);
    }

    [Fact]
    public void Smaps_AttachesVmFlagsToTheirMapping()
    {
        const string text = """
            00400000-00401000 r-xp 00000000 08:01 1 /bin/x
            Size:                  4 kB
            VmFlags: rd ex mr mw me
            01000000-01021000 rw-p 00000000 00:00 0 [heap]
            Size:                132 kB
            Rss:                   8 kB
            VmFlags: rd wr mr mw me ac lo
            """;
        var vmas = ProcFs.ParseSmaps(text);
        Assert.Equal(2, vmas.Count);
        Assert.False(vmas[0].HasFlag("lo"));
        Assert.True(vmas[1].HasFlag("lo"));
        Assert.True(vmas[1].IsHeap);
    }

    [Fact]
    public void Status_IsParsed()
    {
        var s = ProcStatus.Parse("""
            Name:	memtest
            State:	S (sleeping)
            Tgid:	42
            Pid:	42
            PPid:	1
            TracerPid:	17
            VmRSS:	   99188 kB
            RssAnon:	   97164 kB
            RssFile:	    2024 kB
            RssShmem:	       0 kB
            Threads:	8
            SigPnd:	0000000000000000
            ShdPnd:	0000000000004800
            SigBlk:	0000000200000800
            SigIgn:	0000000000000000
            SigCgt:	0000000200000800
            Kthread:	0
            """);
        Assert.Equal("memtest", s.Name);
        Assert.Equal('S', s.State);
        Assert.Equal(17, s.TracerPid);
        Assert.Equal(99188, s.VmRssKb);
        Assert.Equal(97164, s.RssAnonKb);
        Assert.Equal(8, s.Threads);
        Assert.Equal(Signals.Bit(Signals.SIGTERM) | Signals.Bit(12), s.ShdPnd);
        Assert.False(s.KernelThread);
    }

    [Fact]
    public void OwnProcess_MapsAndStatusAreReadable()
    {
        var maps = ProcFs.ReadSmaps(Environment.ProcessId);
        Assert.Contains(maps, v => v.Path == "[vdso]");
        Assert.All(maps, v => Assert.NotNull(v.VmFlags));
        Assert.Equal(Environment.ProcessId, ProcFs.ReadStatus(Environment.ProcessId).Tgid);
        Assert.Contains(Environment.ProcessId, ProcFs.ReadTasks(Environment.ProcessId));
        Assert.True((ProcFs.ReadStatFlags(2) & ProcFs.PF_KTHREAD) != 0, "pid 2 (kthreadd) is a kernel thread");
    }

    [Theory]
    [InlineData(0x00137f, false, false, true, "stopped (SIGSTOP, event 0)")]
    [InlineData(0x80057f, false, false, true, "stopped (SIGTRAP, event 128)")]
    [InlineData(0x000009, false, true, false, "killed by SIGKILL")]
    [InlineData(0x000300, true, false, false, "exited with 3")]
    public void WaitStatus_DecodesLikeTheMacros(int raw, bool exited, bool signaled, bool stopped, string text)
    {
        var s = new WaitStatus(raw);
        Assert.Equal(exited, s.Exited);
        Assert.Equal(signaled, s.Signaled);
        Assert.Equal(stopped, s.Stopped);
        Assert.Equal(text, s.ToString());
    }

    [Fact]
    public void DefaultActions_FollowSignal7()
    {
        Assert.True(Signals.TerminatesByDefault(Signals.SIGTERM));
        Assert.True(Signals.TerminatesByDefault(Signals.SIGRTMIN));
        Assert.False(Signals.TerminatesByDefault(Signals.SIGCHLD));
        Assert.False(Signals.TerminatesByDefault(Signals.SIGCONT));
        Assert.False(Signals.TerminatesByDefault(Signals.SIGSTOP));
        Assert.Equal("SIGRTMIN+2", Signals.Name(36));
    }
}
