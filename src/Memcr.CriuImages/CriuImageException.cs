namespace Memcr.CriuImages;

/// <summary>
/// An image (or a JSON form of one) that cannot be read or written as it is: the message names
/// the file, where in it (byte offset, or JSON path) and what is wrong.
/// </summary>
public sealed class CriuImageException : Exception
{
    public CriuImageException(string path, string where, string problem)
        : base($"{path}: {where}: {problem}")
    {
        Path = path;
        Where = where;
        Problem = problem;
    }

    public CriuImageException(string path, long offset, string problem)
        : this(path, $"offset {offset}", problem)
    {
        Offset = offset;
    }

    public CriuImageException(string path, long offset, string problem, Exception inner)
        : base($"{path}: offset {offset}: {problem}", inner)
    {
        Path = path;
        Where = $"offset {offset}";
        Problem = problem;
        Offset = offset;
    }

    /// <summary>The file (or "stdin").</summary>
    public string Path { get; }

    /// <summary>"offset N" or a JSON path such as "$.entries[2].reg.flags".</summary>
    public string Where { get; }

    /// <summary>The byte offset the problem was found at, for binary images.</summary>
    public long? Offset { get; }

    public string Problem { get; }
}
