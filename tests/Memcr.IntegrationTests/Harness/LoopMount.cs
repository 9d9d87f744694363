namespace Memcr.IntegrationTests.Harness;

/// <summary>
/// A small ext4 file system on a loop device, mounted for one test. It can be frozen (fsfreeze,
/// the FIFREEZE ioctl): every write to it then blocks in the kernel until it is thawed, which holds
/// a checkpoint at its first write to the image for as long as a test needs.
/// </summary>
public sealed class LoopMount : IDisposable
{
    private readonly string _backing;
    private bool _frozen;

    private LoopMount(string path, string backing)
    {
        Path = path;
        _backing = backing;
    }

    public string Path { get; }

    public static LoopMount Create(int megabytes)
    {
        string path = Repo.NewScratchDir("loop");
        string backing = path + ".ext4";
        using (var file = File.Create(backing))
            file.SetLength((long)megabytes << 20);
        try
        {
            Repo.MustRun("mkfs.ext4", "-q", "-F", backing);
            Repo.MustRun("mount", "-o", "loop", backing, path);
        }
        catch
        {
            File.Delete(backing);
            Directory.Delete(path);
            throw;
        }
        return new LoopMount(path, backing);
    }

    public void Freeze()
    {
        Repo.MustRun("fsfreeze", "--freeze", Path);
        _frozen = true;
    }

    public void Thaw()
    {
        if (!_frozen)
            return;
        Repo.MustRun("fsfreeze", "--unfreeze", Path);
        _frozen = false;
    }

    public void Dispose()
    {
        Thaw();
        Repo.Run("umount", Path);
        Directory.Delete(Path);
        File.Delete(_backing);
    }
}
