using System.Diagnostics;
using System.Globalization;
using Memcr.IntegrationTests.Harness;

namespace Memcr.IntegrationTests;

/// <summary>
/// Scripts written for the original read memcr's output through a FIFO and close it once the
/// prompt is there: every later write of memcr's fails with EPIPE. That must never skip the
/// restore, the cleanup or the exit code.
/// </summary>
public sealed class BrokenOutputTests
{
    [Fact]
    public void ReaderGoneBeforeEnter_RestoreStillCompletes()
    {
        using var target = FifoTarget.StartIdle(8);
        string dir = Repo.NewScratchDir("epipe");
        using (var memcr = FifoOutputMemcr.Start(dir, "-p", target.Pid.ToString(CultureInfo.InvariantCulture), "-d", dir))
        {
            memcr.ReadUntilPromptThenCloseTheReader();
            memcr.PressEnter();
            Assert.Equal(0, memcr.WaitForExit());
        }
        target.AssertIntact();
        Assert.Equal(0, target.Status.TracerPid);
        Assert.Empty(Directory.GetFiles(dir, "pages-*"));
        Directory.Delete(dir, recursive: true);
    }

    [Fact]
    public void ReaderGoneBeforeEnter_DamagedImageStillKillsTheTargetAndRemovesTheImage()
    {
        using var target = FifoTarget.StartIdle(8);
        string dir = Repo.NewScratchDir("epipe-damaged");
        using (var memcr = FifoOutputMemcr.Start(dir, "-p", target.Pid.ToString(CultureInfo.InvariantCulture), "-d", dir))
        {
            memcr.ReadUntilPromptThenCloseTheReader();
            ImageDamage.Apply(Path.Combine(dir, $"pages-{target.Pid}.img"), "flip");
            memcr.PressEnter();
            Assert.NotEqual(0, memcr.WaitForExit());
        }
        Assert.True(target.WaitUntilDead(TimeSpan.FromSeconds(10)), "the target must not run on dropped memory");
        Assert.Empty(Directory.GetFiles(dir, "pages-*"));
        Directory.Delete(dir, recursive: true);
    }

    /// <summary>memcr with stdout and stderr on a FIFO that the test reads, and its stdin on a pipe.</summary>
    private sealed class FifoOutputMemcr : IDisposable
    {
        private readonly Process _process;
        private readonly string _fifo;

        private FifoOutputMemcr(Process process, string fifo)
        {
            _process = process;
            _fifo = fifo;
        }

        public static FifoOutputMemcr Start(string dir, params string[] args)
        {
            string fifo = Path.Combine(dir, "output");
            FifoTarget.MakeFifo(fifo);
            var psi = new ProcessStartInfo("bash") { RedirectStandardInput = true, UseShellExecute = false };
            psi.ArgumentList.Add("-c");
            psi.ArgumentList.Add("exec \"$0\" \"$@\" >\"$MEMCR_OUTPUT\" 2>&1");
            psi.ArgumentList.Add(Repo.Memcr);
            foreach (var a in args)
                psi.ArgumentList.Add(a);
            psi.Environment["MEMCR_OUTPUT"] = fifo;
            return new FifoOutputMemcr(Process.Start(psi)!, fifo);
        }

        /// <summary>Reads memcr's output up to the prompt, as such a script does, then goes away.</summary>
        public void ReadUntilPromptThenCloseTheReader()
        {
            var read = Task.Run(() =>
            {
                using var reader = new StreamReader(new FileStream(_fifo, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 1));
                var seen = new List<string>();
                while (reader.ReadLine() is { } line)
                {
                    seen.Add(line);
                    if (line.Contains(MemcrProcess.Prompt, StringComparison.Ordinal))
                        return;
                }
                throw new InvalidOperationException($"memcr's output ended before the prompt:\n{string.Join('\n', seen)}");
            });
            Assert.True(read.Wait(TimeSpan.FromSeconds(120)), "memcr did not print its prompt");
        }

        public void PressEnter()
        {
            _process.StandardInput.WriteLine();
            _process.StandardInput.Flush();
        }

        public int WaitForExit()
        {
            if (!_process.WaitForExit(TimeSpan.FromSeconds(120)))
                throw new TimeoutException("memcr did not exit after its output's reader went away");
            return _process.ExitCode;
        }

        public void Dispose()
        {
            if (!_process.HasExited)
            {
                _process.Kill();
                _process.WaitForExit();
            }
            _process.Dispose();
            File.Delete(_fifo);
        }
    }
}
