using Memcr.Cli;
using Memcr.Image;

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
    public void OptionalArgument_IsTakenAttached_OrAsTheNextWord()
    {
        var (options, operands) = GetOpt.Parse(["-zlz4", "-c", "--compress=zstd", "-z", "--compress", "zstd", "-z", "lz4", "-z", "-n"], MemcrArguments.Specs);
        Assert.Equal(["lz4", null, "zstd", null, "zstd", "lz4", null, null], options.Select(o => o.Value));
        Assert.Empty(operands);
    }

    [Theory]
    [InlineData(new[] { "-zce" }, Codec.Lz4, true, Encryption.Aes256Gcm)]
    [InlineData(new[] { "-cz" }, Codec.Lz4, true, Encryption.None)]
    [InlineData(new[] { "-f", "-z", "zstd", "-c", "-e" }, Codec.Zstd, true, Encryption.Aes256Gcm)]
    [InlineData(new[] { "-zzstd", "-e", "aes-128-cbc" }, Codec.Zstd, false, Encryption.Aes128Gcm)]
    [InlineData(new[] { "-ce", "aes-192-cbc" }, Codec.None, true, Encryption.Aes192Gcm)]
    [InlineData(new[] { "--encrypt=aes-256-cbc", "--checksum" }, Codec.None, true, Encryption.Aes256Gcm)]
    [InlineData(new[] { "-e", "-z" }, Codec.Lz4, false, Encryption.Aes256Gcm)]
    public void CompressChecksumEncrypt_CombineInAnyForm(string[] args, Codec codec, bool checksum, Encryption encryption)
    {
        var a = MemcrArguments.Parse([.. args, "-p", "1"], _ => null);
        Assert.Equal((codec, checksum, encryption, 1), (a.Codec, a.Checksum, a.Encryption, a.Pid));
    }

    [Theory]
    [InlineData(new[] { "-z", "LZ4" }, Codec.Lz4)]
    [InlineData(new[] { "-z", "ZSTD" }, Codec.Zstd)]
    [InlineData(new[] { "-zZSTD" }, Codec.Zstd)]
    [InlineData(new[] { "-zLZ4" }, Codec.Lz4)]
    [InlineData(new[] { "--compress=ZSTD" }, Codec.Zstd)]
    [InlineData(new[] { "--compress", "Zstd" }, Codec.Zstd)]
    [InlineData(new[] { "--compress=LZ4", "-c" }, Codec.Lz4)]
    public void AlgorithmNames_AreAcceptedInCapitals_AsTheOriginalDoes(string[] args, Codec codec)
    {
        Assert.Equal(codec, MemcrArguments.Parse([.. args, "-p", "1"], _ => null).Codec);
    }

    [Fact]
    public void CipherNames_AreAcceptedInCapitals()
    {
        Assert.Equal(Encryption.Aes128Gcm, MemcrArguments.Parse(["-e", "AES-128-CBC", "-p", "1"], _ => null).Encryption);
        Assert.Equal(Encryption.Aes192Gcm, MemcrArguments.Parse(["--encrypt=AES-192-GCM", "-p", "1"], _ => null).Encryption);
    }

    [Fact]
    public void KeyFile_ComesFromTheOptionOrTheEnvironment()
    {
        Assert.Equal(("/k", Encryption.Aes256Gcm), Pick(MemcrArguments.Parse(["--key-file", "/k"], _ => "/env")));
        Assert.Equal(("/env", Encryption.Aes128Gcm), Pick(MemcrArguments.Parse(["-e", "aes-128-gcm"], v => v == "MEMCR_KEY_FILE" ? "/env" : null)));
        // The variable alone does not turn encryption on.
        Assert.Equal((null, Encryption.None), Pick(MemcrArguments.Parse(["-z"], _ => "/env")));

        static (string?, Encryption) Pick(MemcrArguments a) => (a.KeyFile, a.Encryption);
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
    [InlineData(new[] { "-t", "0" }, "invalid timeout '0': give seconds > 0")]
    [InlineData(new[] { "-g", "no-such-group-here" }, "invalid group 'no-such-group-here': not a group id, nor a group in /etc/group")]
    [InlineData(new[] { "-z", "gzip" }, "invalid compression algorithm 'gzip': use lz4 or zstd")]
    [InlineData(new[] { "-zfoo" }, "invalid compression algorithm 'foo': use lz4 or zstd")]
    [InlineData(new[] { "-z", "GZIP" }, "invalid compression algorithm 'GZIP': use lz4 or zstd")]
    [InlineData(new[] { "--compress=Lz5" }, "invalid compression algorithm 'Lz5': use lz4 or zstd")]
    [InlineData(new[] { "-e", "des" }, "invalid cipher 'des': use one of aes-128-gcm, aes-192-gcm, aes-256-gcm, aes-128-cbc, aes-192-cbc, aes-256-cbc")]
    [InlineData(new[] { "--parasite" }, "option '--parasite' is ambiguous; possibilities: '--parasite-socket-dir' '--parasite-socket-gid' '--parasite-socket-netns'")]
    public void BadArguments_AreRefusedWithGetoptMessages(string[] args, string message)
    {
        var e = Assert.Throws<GetOptException>(() => MemcrArguments.Parse(args));
        Assert.Equal(message, e.Message);
    }

    [Fact]
    public void ServiceOptions_AreParsed()
    {
        var a = MemcrArguments.Parse(["-l", "/run/memcr.sock", "-g", "100", "-t", "2.5", "--listen-address", "0.0.0.0"]);
        Assert.Equal(("/run/memcr.sock", 100, "0.0.0.0", TimeSpan.FromSeconds(2.5)), (a.Listen, a.ListenGid, a.ListenAddress, a.Timeout));
        Assert.Equal("9000", MemcrArguments.Parse(["-l9000"]).Listen);
        Assert.Equal(0, MemcrArguments.Parse(["-l", "x", "-g", "root"]).ListenGid);
    }

    [Fact]
    public void ParasiteSocketOptions_AreAccepted()
    {
        var a = MemcrArguments.Parse(["-p", "1", "-S", "/run/memcr", "-G", "100", "-N"]);
        Assert.Equal("/run/memcr", a.ParasiteSocketDir);
    }
}
