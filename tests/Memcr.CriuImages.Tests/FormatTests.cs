using System.Numerics;
using System.Text;
using Memcr.CriuImages.Json;

namespace Memcr.CriuImages.Tests;

/// <summary>crit's value conventions, against what Python 3.11 (crit's runtime) prints for the same input.</summary>
public sealed class FormatTests
{
    [Theory]
    [InlineData("\0abstract-name", "=00abstract-name")]
    [InlineData("/tmp/sock", "/tmp/sock")]
    [InlineData("a=b", "a=3Db")]
    [InlineData("trailing ", "trailing=20")]
    [InlineData("tab\there", "tab\there")]
    [InlineData(".", "=2E")]
    [InlineData("a\tb \0\u00ff", "a\tb =00=FF")]
    [InlineData("line\r\nbreak", "line\r\nbreak")]
    [InlineData("one\ntwo ", "one\ntwo=20")]
    public void QuotedPrintable_IsPythonsQuopri(string raw, string encoded)
    {
        var bytes = Encoding.Latin1.GetBytes(raw);
        Assert.Equal(encoded, QuotedPrintable.Encode(bytes));
        Assert.Equal(bytes, QuotedPrintable.Decode(encoded));
    }

    [Fact]
    public void QuotedPrintable_BreaksLongLinesAt76()
    {
        string encoded = QuotedPrintable.Encode(Encoding.ASCII.GetBytes(new string('x', 80)));
        Assert.Equal(new string('x', 75) + "=\n" + new string('x', 5), encoded);
        Assert.Equal(new string('x', 80), Encoding.ASCII.GetString(QuotedPrintable.Decode(encoded)));
    }

    [Fact]
    public void Base64_HasPythonsLineBreaks()
    {
        var bytes = Enumerable.Range(0, 100).Select(i => (byte)i).ToArray();
        string expected = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4\nOTo7PD0+P0BBQkNERUZHSElKS0xNTk9QUVJTVFVWV1hZWltcXV5fYGFiYw==\n";
        Assert.Equal(expected, CritFormats.Base64Lines(bytes));
        Assert.Equal(bytes, CritFormats.FromBase64(expected));
        Assert.Equal("", CritFormats.Base64Lines([]));
    }

    [Theory]
    [InlineData("::1", "::1")]
    [InlineData("fe80::1", "fe80::1")]
    [InlineData("::ffff:127.0.0.1", "::ffff:7f00:1")]
    [InlineData("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1")]
    [InlineData("1:0:0:2:0:0:0:3", "1:0:0:2::3")]
    [InlineData("0:0:1:0:0:0:0:0", "0:0:1::")]
    [InlineData("1:2:3:4:5:6:7:0", "1:2:3:4:5:6:7:0")]
    [InlineData("127.0.0.1", "127.0.0.1")]
    public void Addresses_AreWrittenAsPythonsIpaddress(string given, string shown)
    {
        var words = CritFormats.UnAddress(given)!;
        Assert.Equal(shown, CritFormats.Address(words));
        Assert.Equal(words, CritFormats.UnAddress(shown));
    }

    [Fact]
    public void Json_IsPythonsJsonDump()
    {
        var value = new PyDict
        {
            { "a", "é\u0001\u007f😀/\"\\" },
            { "b", new List<object?>() },
            { "c", new PyDict() },
            { "d", new List<object?> { 1UL, new PyDict { { "x", true }, { "y", null } } } },
        };
        var pretty = new StringWriter();
        new PyJsonWriter(pretty, 4).WriteValue(value, 0);
        Assert.Equal("{\n    \"a\": \"\\u00e9\\u0001\\u007f\\ud83d\\ude00/\\\"\\\\\",\n    \"b\": [],\n    \"c\": {},\n    \"d\": [\n        1,\n        {\n            \"x\": true,\n            \"y\": null\n        }\n    ]\n}", pretty.ToString());
        var plain = new StringWriter();
        new PyJsonWriter(plain, null).WriteValue(new PyDict { { "a", new List<object?> { 1UL, 2UL } }, { "b", new PyDict { { "c", "d" } } } }, 0);
        Assert.Equal("{\"a\": [1, 2], \"b\": {\"c\": \"d\"}}", plain.ToString());
    }

    [Theory]
    [InlineData("0x_1f", 31)]
    [InlineData("1_000", 1000)]
    [InlineData(" 0o17 ", 15)]
    [InlineData("0b101", 5)]
    [InlineData("-0x10", -16)]
    [InlineData("0", 0)]
    [InlineData("00", 0)]
    public void Integers_AreReadAsPythonsIntWithBaseZero(string text, long value) =>
        Assert.Equal(new BigInteger(value), CritFormats.ParsePythonInt(text));

    [Theory]
    [InlineData("010")]
    [InlineData("0x")]
    [InlineData("1__0")]
    [InlineData("_1")]
    [InlineData("12a")]
    [InlineData("")]
    public void NonIntegers_AreRefused(string text) => Assert.Null(CritFormats.ParsePythonInt(text));

    [Fact]
    public void Hex_FollowsPythonForNegatives()
    {
        Assert.Equal("0x-5", CritFormats.Hex(-5));
        Assert.Equal("0xffffffffffffffff", CritFormats.Hex(ulong.MaxValue));
        Assert.Equal("0x0", CritFormats.Hex(0));
    }

    [Fact]
    public void Flags_NameTheBitsThenTheRest()
    {
        Assert.Equal("MAP_PRIVATE | MAP_ANON | 0x40000", CritFormats.Flags("mmap.flags", 0x40022));
        Assert.Equal("", CritFormats.Flags("rfile.flags", 0));
        Assert.Equal(new BigInteger(0x40022), CritFormats.UnFlags("mmap.flags", "MAP_PRIVATE | MAP_ANON | 0x40000", out _));
    }

    [Fact]
    public void Devices_UseTheKernelOrTheOldEncoding()
    {
        Assert.Equal("136:3", CritFormats.Dev((136UL << 20) | 3, old: false));
        Assert.Equal("8:1", CritFormats.Dev(0x801, old: true));
        Assert.Equal(new BigInteger(0x801), CritFormats.UnDev("8:1", old: true));
    }

    [Theory]
    [InlineData(15, "15B")]
    [InlineData(1536, "1.5KB")]
    [InlineData(1048576, "1MB")]
    public void PayloadSizes_AreCritsHumanSizes(double bytes, string shown) => Assert.Equal(shown, CritFormats.HumanSize(bytes));
}
