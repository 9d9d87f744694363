using System.Globalization;
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

    /// <summary>A stream that hands out at most a few bytes per read, as a slow /proc file might.</summary>
    private sealed class TrickleStream(byte[] data, int step) : MemoryStream(data)
    {
        public override int Read(byte[] buffer, int offset, int count) => base.Read(buffer, offset, Math.Min(count, step));
    }

    [Fact]
    public void MapsReader_ReadsLinesAcrossReadsAndSharesRepeatedPathsAndFlags()
    {
        var text = new System.Text.StringBuilder();
        for (int i = 0; i < 3000; i++)
        {
            text.Append(CultureInfo.InvariantCulture, $"{0x10000 + i * 0x1000:x}-{0x11000 + i * 0x1000:x} r{(i % 2 == 0 ? 'w' : '-')}xp 00000000 08:01 {i} {(i % 3 == 0 ? "" : "/usr/lib/libé.so")}\n");
            text.Append(CultureInfo.InvariantCulture, $"Anonymous:       {i % 5} kB\nVmFlags: rd {(i % 2 == 0 ? "wr " : "")}mr mw me\n");
        }
        // More than the reader's 64 KiB buffer, handed out 7 bytes at a time: lines cross reads and refills.
        using var reader = new MapsReader(new TrickleStream(System.Text.Encoding.UTF8.GetBytes(text.ToString()), 7));
        var vmas = new List<(Vma Vma, long Anonymous)>();
        while (reader.Next(out var vma))
            vmas.Add((vma, reader.AnonymousKb));
        Assert.Equal(3000, vmas.Count);
        for (int i = 0; i < 3000; i++)
        {
            var (v, anonymous) = vmas[i];
            Assert.Equal((ulong)(0x10000 + i * 0x1000), v.Start);
            Assert.Equal((ulong)i, v.Inode);
            Assert.Equal(i % 2 == 0, v.IsWritable);
            Assert.Equal(i % 2 == 0, v.HasFlag("wr"));
            Assert.Equal(i % 5, anonymous);
            Assert.Equal(i % 3 == 0 ? "" : "/usr/lib/libé.so", v.Path);
        }
        Assert.Same(vmas[1].Vma.Path, vmas[2].Vma.Path);
        Assert.Same(vmas[0].Vma.VmFlags, vmas[2].Vma.VmFlags);
        Assert.NotSame(vmas[0].Vma.VmFlags, vmas[1].Vma.VmFlags);
    }

    [Theory]
    [InlineData("Size: 4 kB\n1000-2000 rw-p 00000000 00:00 0\n", "before the first mapping")]
    [InlineData("1000-zz rw-p 00000000 00:00 0\n", "malformed maps line")]
    [InlineData("1000-2000 rw-p 00000000\n", "malformed maps line")]
    public void MapsReader_RefusesWhatIsNotMaps(string text, string message)
    {
        var e = Assert.Throws<FormatException>(() => ProcFs.ParseSmaps(text));
        Assert.Contains(message, e.Message, StringComparison.Ordinal);
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
