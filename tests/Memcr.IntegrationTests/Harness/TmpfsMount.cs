namespace Memcr.IntegrationTests.Harness;

/// <summary>A tmpfs mounted for one test.</summary>
public sealed class TmpfsMount : IDisposable
{
    private TmpfsMount(string path) => Path = path;

    public string Path { get; }

    public static TmpfsMount Create(string options)
    {
        string path = Repo.NewScratchDir("tmpfs");
        Repo.MustRun("mount", "-t", "tmpfs", "-o", options, "memcr-test", path);
        return new TmpfsMount(path);
    }

    public void Dispose()
    {
        Repo.Run("umount", Path);
        Directory.Delete(Path);
    }
}
