namespace Memcr.Linux.Memory;

/// <summary>madvise(2) advice values (the same on every Linux architecture).</summary>
public static class Madvise
{
    public const int DontNeed = 4;
}
