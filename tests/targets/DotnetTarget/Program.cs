// A .NET checkpoint target speaking the FIFO protocol of tests/targets (see memtest.c):
// writes "READY <pid>" to DIR/report, answers "CHECK" on DIR/cmd with one "REPORT ..." line.
// Keeps the GC busy from several threads while holding 32 MiB of patterned arrays.
using System.Security.Cryptography;
using System.Text;

string dir = args[0];
const int Arrays = 8;
var data = new byte[Arrays][];
var hashes = new byte[Arrays][];
for (int i = 0; i < Arrays; i++)
{
    data[i] = new byte[4 << 20];
    new Random(i).NextBytes(data[i]);
    hashes[i] = SHA256.HashData(data[i]);
}

long errors = 0;
long iterations = 0;
for (int t = 0; t < 3; t++)
{
    int id = t;
    new Thread(() =>
    {
        var mine = new byte[1 << 20];
        int gen = 0;
        new Random(1000 + id).NextBytes(mine);
        while (true)
        {
            var expected = new byte[mine.Length];
            new Random(1000 + id + gen).NextBytes(expected);
            if (!expected.AsSpan().SequenceEqual(mine))
                Interlocked.Increment(ref errors);
            gen++;
            new Random(1000 + id + gen).NextBytes(mine);
            var garbage = new List<string>();
            for (int i = 0; i < 1000; i++)
                garbage.Add(i.ToString(System.Globalization.CultureInfo.InvariantCulture));
            Interlocked.Increment(ref iterations);
            Thread.Sleep(2);
        }
    }) { IsBackground = true }.Start();
}

using var report = new FileStream(Path.Combine(dir, "report"), FileMode.Open, FileAccess.Write, FileShare.ReadWrite, 1);
void Reply(string line)
{
    report.Write(Encoding.ASCII.GetBytes(line + "\n"));
    report.Flush();
}

Reply($"READY {Environment.ProcessId}");
using var cmd = new StreamReader(new FileStream(Path.Combine(dir, "cmd"), FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 1));
while (cmd.ReadLine() is { } line)
{
    if (line.StartsWith("CHECK", StringComparison.Ordinal))
    {
        GC.Collect();
        string bad = "none";
        for (int i = 0; i < Arrays; i++)
        {
            if (!SHA256.HashData(data[i]).AsSpan().SequenceEqual(hashes[i]))
                bad = $"array{i}";
        }
        long before = Interlocked.Read(ref iterations);
        while (Interlocked.Read(ref iterations) < before + 3)
            Thread.Sleep(1);
        bool ok = bad == "none" && Interlocked.Read(ref errors) == 0;
        Reply($"REPORT ok={(ok ? 1 : 0)} bad={bad} worker_errors={errors} iterations={iterations}");
    }
    else if (line == "EXIT")
    {
        return 0;
    }
}
return 0;
