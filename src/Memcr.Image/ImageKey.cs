namespace Memcr.Image;

/// <summary>A persistent encryption key, read from a key file: the raw key bytes, or the key as hex text.</summary>
public static class ImageKey
{
    /// <summary>Reads a key of any valid length (16, 24 or 32 bytes).</summary>
    public static byte[] Load(string path)
    {
        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ImageKeyException($"cannot read key file {path}: {e.Message}");
        }
        if (bytes.Length is 16 or 24 or 32)
            return bytes;
        string text = System.Text.Encoding.ASCII.GetString(bytes).Trim();
        if (text.Length is 32 or 48 or 64 && text.All(char.IsAsciiHexDigit))
            return Convert.FromHexString(text);
        throw new ImageKeyException($"key file {path} holds {bytes.Length} bytes: a key is 16, 24 or 32 raw bytes, or 32, 48 or 64 hex digits");
    }

    /// <summary>Reads a key for <paramref name="scheme"/>, which must be of the length it needs.</summary>
    public static byte[] Load(string path, Encryption scheme)
    {
        var key = Load(path);
        if (key.Length != ImageCipher.KeyLength(scheme))
            throw new ImageKeyException($"key file {path} holds a {key.Length * 8}-bit key; {ImageCipher.Name(scheme)} needs {ImageCipher.KeyLength(scheme) * 8} bits");
        return key;
    }
}

public sealed class ImageKeyException(string message) : Exception(message);
