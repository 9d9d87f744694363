using Memcr.Cli;

namespace Memcr.Tests;

public sealed class GetOptTests
{
    [Fact]
    public void BundledShortFlags_AreSplit()
    {
        var a = MemcrArguments.Parse(["-nmf", "-p", "42"]);
        Assert.True(a.NoWait);
        Assert.True(a.ProcMem);
        Assert.True(a.RssFile);
        Assert.Equal(42, a.Pid);
    }

    [Fact]
    public void RequiredValue_CanBeAttachedOrSeparate_AndEndABundle()
    {
        Assert.Equal(7, MemcrArguments.Parse(["-p7"]).Pid);
        Assert.Equal(7, MemcrArguments.Parse(["-np", "7"]).Pid);
        Assert.Equal("/var/tmp", MemcrArguments.Parse(["-p", "1", "-d/var/tmp"]).DumpDir);
    }

    [Fact]
    public void LongOptions_TakeEqualsOrNextWord_AndUniquePrefixes()
    {
        var a = MemcrArguments.Parse(["--pid=12", "--dir", "/x", "--no-wait", "--proc-mem", "--rss"]);
        Assert.Equal(12, a.Pid);
        Assert.Equal("/x", a.DumpDir);
        Assert.True(a.NoWait && a.ProcMem && a.RssFile);
        Assert.True(MemcrArguments.Parse(["--nowait"]).NoWait);
    }

    [Fact]
    public void OptionalArgument_IsTakenOnlyWhenAttached()
    {
        var (options, operands) = GetOpt.Parse(["-zlz4", "-c", "--compress=zstd", "-z"], MemcrArguments.Specs);
        Assert.Equal(["lz4", null, "zstd", null], options.Select(o => o.Value));
        Assert.Empty(operands);
    }

    [Fact]
    public void DoubleDash_EndsOptions()
    {
        var (_, operands) = GetOpt.Parse(["-n", "--", "-p"], MemcrArguments.Specs);
        Assert.Equal(["-p"], operands);
    }

    [Theory]
    [InlineData(new[] { "-x" }, "invalid option -- 'x'")]
    [InlineData(new[] { "--bogus" }, "unrecognized option '--bogus'")]
    [InlineData(new[] { "-p" }, "option requires an argument -- 'p'")]
    [InlineData(new[] { "--pid" }, "option '--pid' requires an argument")]
    [InlineData(new[] { "--help=1" }, "option '--help' doesn't allow an argument")]
    [InlineData(new[] { "-p", "abc" }, "invalid pid 'abc': not a number")]
    [InlineData(new[] { "-p", "0" }, "invalid pid 0: a pid must be > 0")]
    [InlineData(new[] { "-p", "-5" }, "invalid pid -5: a pid must be > 0")]
    [InlineData(new[] { "stray" }, "unexpected argument 'stray'")]
    [InlineData(new[] { "--parasite" }, "option '--parasite' is ambiguous; possibilities: '--parasite-socket-dir' '--parasite-socket-gid' '--parasite-socket-netns'")]
    public void BadArguments_AreRefusedWithGetoptMessages(string[] args, string message)
    {
        var e = Assert.Throws<GetOptException>(() => MemcrArguments.Parse(args));
        Assert.Equal(message, e.Message);
    }

    [Fact]
    public void OptionsOfLaterIssues_AreAcceptedButReportedUnsupported()
    {
        var a = MemcrArguments.Parse(["-p", "1", "-z", "-c", "-l", "9000", "-t", "5"]);
        Assert.Equal(["-z (--compress)", "-c (--checksum)", "-l (--listen)", "-t (--timeout)"], a.Unsupported);
    }

    [Fact]
    public void ParasiteSocketOptions_AreAccepted()
    {
        var a = MemcrArguments.Parse(["-p", "1", "-S", "/run/memcr", "-G", "100", "-N"]);
        Assert.Empty(a.Unsupported);
        Assert.Equal("/run/memcr", a.ParasiteSocketDir);
    }
}
