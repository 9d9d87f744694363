using System.Globalization;
using Memcr.IntegrationTests.Harness;
using Memcr.Linux.Ptrace;

namespace Memcr.IntegrationTests;

/// <summary>
/// CRIU mode and file locks (tests/targets/locks.c): refused without --file-locks, as CRIU does;
/// with it every flock, POSIX and OFD lock comes back on its descriptor, and a lock someone else
/// took meanwhile makes the restore fail cleanly, to be retried once it is gone.
/// </summary>
public sealed class CriuFileLockTests
{
    private static string P(int pid) => pid.ToString(CultureInfo.InvariantCulture);

    [Fact]
    public void Locks_AreRefusedWithoutFileLocks_AndComeBackWithIt_EvenAfterAConflictingHolderWent()
    {
        string dir = Repo.NewScratchDir("criu-locks");
        string images = Directory.CreateDirectory(Path.Combine(dir, "images")).FullName;
        string exe = Gcc.Build("locks");
        Repo.MustRun("setsid", "-f", "sh", "-c", $"cd {dir} && exec {exe} {dir} </dev/null >{dir}/out 2>&1");
        var ready = CriuRun.WaitForLine(Path.Combine(dir, "out"), l => l.StartsWith("READY", StringComparison.Ordinal))[0].Split(' ');
        int parent = int.Parse(ready[1], CultureInfo.InvariantCulture), child = int.Parse(ready[3], CultureInfo.InvariantCulture);
        int holder = 0;
        try
        {
            var locks = Locks(parent, child);
            // The parent's two POSIX locks show on fd 4 and its dup (fd 6), the child's one on both too.
            Assert.Equal(6, locks.Count(l => l.Contains("POSIX", StringComparison.Ordinal)));
            Assert.Contains(locks, l => l.Contains("FLOCK", StringComparison.Ordinal));
            Assert.Contains(locks, l => l.Contains("OFDLCK", StringComparison.Ordinal));

            // Without --file-locks: refused, the tree runs on untouched, nothing written.
            var (code, output) = CriuRun.Dump(parent, images);
            Assert.True(code != 0, output);
            Assert.Contains("--file-locks", output);
            Assert.Contains($"pid {parent} was left running untouched", output);
            Assert.Equal("0", CriuRun.Status(parent, "TracerPid"));
            Assert.Empty(Directory.GetFileSystemEntries(images));
            Assert.Equal(locks, Locks(parent, child));

            CriuRun.MustDump(parent, images, "--file-locks");
            CriuRun.WaitFree(parent, child);
            Assert.True(File.Exists(Path.Combine(images, "filelocks.img")));

            // Someone takes the flock'ed file meanwhile: the restore fails, leaves nothing behind, keeps the images.
            holder = StartHolder(Path.Combine(dir, "flock"), dir);
            string before = CriuRun.Fingerprint(images);
            (code, output) = CriuRun.Restore(images, "--file-locks");
            Assert.True(code != 0, output);
            Assert.Contains("cannot take a flock write lock on its fd 3 again", output);
            Assert.Contains("another process holds a lock that conflicts", output);
            CriuRun.WaitFree(parent, child);
            Assert.Equal(before, CriuRun.Fingerprint(images));

            Syscalls.Kill(holder, Signals.SIGKILL);
            CriuRun.WaitFree(holder);
            CriuRun.MustRestore(images, "--file-locks");
            Assert.Equal(locks, Locks(parent, child));
            // The restored lock is a real one: nobody else can take it.
            var (busy, _) = Repo.Run("flock", "-n", "-x", Path.Combine(dir, "flock"), "true");
            Assert.Equal(1, busy);

            // Restored without --file-locks, the tree runs without its locks, and memcr says so.
            Syscalls.Kill(child, Signals.SIGKILL);
            Syscalls.Kill(parent, Signals.SIGKILL);
            CriuRun.WaitFree(parent, child);
            (code, output) = CriuRun.Restore(images);
            Assert.True(code == 0, output);
            Assert.Contains("file lock(s) in", output);
            Assert.Empty(Locks(parent, child));
        }
        finally
        {
            foreach (int pid in new[] { child, parent, holder }.Where(p => p > 0))
                Syscalls.Kill(pid, Signals.SIGKILL);
        }
        CriuRun.WaitFree(parent, child);
        Directory.Delete(dir, recursive: true);
    }

    /// <summary>A process holding an exclusive flock on <paramref name="path"/>; its pid.</summary>
    private static int StartHolder(string path, string dir)
    {
        string pidFile = Path.Combine(dir, "holder");
        Repo.MustRun("setsid", "-f", "sh", "-c",
            $"exec python3 -c 'import fcntl,os,time; f=open(\"{path}\",\"r+\"); fcntl.flock(f, fcntl.LOCK_EX); open(\"{pidFile}\",\"w\").write(str(os.getpid())); time.sleep(1000)' </dev/null >/dev/null 2>&1");
        return int.Parse(CriuRun.WaitForLine(pidFile, l => l.Length > 0)[0], CultureInfo.InvariantCulture);
    }

    /// <summary>"pid fd: lock" for every lock in the fdinfo of every descriptor of these processes, without the lock's list number.</summary>
    private static List<string> Locks(params int[] pids)
    {
        var locks = new List<string>();
        foreach (int pid in pids)
        {
            foreach (var f in Directory.GetFiles($"/proc/{pid}/fdinfo"))
            {
                foreach (var l in File.ReadAllLines(f).Where(l => l.StartsWith("lock:", StringComparison.Ordinal)))
                    locks.Add($"{P(pid)} {Path.GetFileName(f)}: {l[(l.IndexOf(':', 5) + 1)..].Trim()}");
            }
        }
        locks.Sort(StringComparer.Ordinal);
        return locks;
    }
}
