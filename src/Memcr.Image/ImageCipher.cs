using System.Buffers.Binary;
using System.Security.Cryptography;

namespace Memcr.Image;

/// <summary>
/// AES-GCM of page records. Each image has its own key, HKDF-SHA256(master key, salt = image id ||
/// 16 random bytes), so a record number can serve as the nonce without ever repeating one under a
/// key, and a record of another image never decrypts. The file header carries a key check
/// (HMAC-SHA256 of header bytes 0..63 under the image key): a wrong key or an altered header is
/// refused before any payload is read. Each record's header bytes 0..31 are authenticated with
/// its payload. One instance per thread (<see cref="AesGcm"/> is not shared).
/// </summary>
public sealed class ImageCipher : IDisposable
{
    private static ReadOnlySpan<byte> Info => "memcr image v2 record key"u8;

    private readonly AesGcm _aes;
    private readonly byte[] _imageKey;

    private ImageCipher(byte[] imageKey, Encryption scheme)
    {
        _imageKey = imageKey;
        Scheme = scheme;
        _aes = new AesGcm(imageKey, ImageFormat.TagSize);
    }

    public Encryption Scheme { get; }

    public static int KeyLength(Encryption scheme) => scheme switch
    {
        Encryption.Aes128Gcm => 16,
        Encryption.Aes192Gcm => 24,
        Encryption.Aes256Gcm => 32,
        _ => throw new ArgumentOutOfRangeException(nameof(scheme), scheme, "not an encryption scheme"),
    };

    public static string Name(Encryption scheme) => scheme switch
    {
        Encryption.None => "none",
        Encryption.Aes128Gcm => "aes-128-gcm",
        Encryption.Aes192Gcm => "aes-192-gcm",
        Encryption.Aes256Gcm => "aes-256-gcm",
        _ => $"unknown ({(byte)scheme})",
    };

    /// <summary>The per-image key: a function of the master key, the image id and the header's salt.</summary>
    public static byte[] DeriveImageKey(ReadOnlySpan<byte> masterKey, Encryption scheme, ulong imageId, ReadOnlySpan<byte> salt)
    {
        if (masterKey.Length != KeyLength(scheme))
            throw new ArgumentException($"{Name(scheme)} needs a {KeyLength(scheme)}-byte key, this one has {masterKey.Length} bytes", nameof(masterKey));
        Span<byte> fullSalt = stackalloc byte[8 + ImageFormat.KeySaltSize];
        BinaryPrimitives.WriteUInt64LittleEndian(fullSalt, imageId);
        salt.CopyTo(fullSalt[8..]);
        var key = new byte[KeyLength(scheme)];
        HKDF.DeriveKey(HashAlgorithmName.SHA256, masterKey, key, fullSalt, Info);
        return key;
    }

    /// <summary>A cipher for writing a new image: fills in the header's salt and key check.</summary>
    public static (ImageCipher Cipher, ImageHeader Header) ForNewImage(ImageHeader header, ReadOnlySpan<byte> masterKey)
    {
        var salt = RandomNumberGenerator.GetBytes(ImageFormat.KeySaltSize);
        var key = DeriveImageKey(masterKey, header.Encryption, header.ImageId, salt);
        var withSalt = header with { KeySalt = salt };
        var sealedHeader = withSalt with { KeyCheck = KeyCheck(key, withSalt) };
        return (new ImageCipher(key, header.Encryption), sealedHeader);
    }

    /// <summary>A cipher for an existing image; throws if the key is not the one it was written with.</summary>
    public static ImageCipher ForImage(ImageHeader header, ReadOnlySpan<byte> masterKey, string path)
    {
        if (masterKey.Length != KeyLength(header.Encryption))
            throw new ImageFormatException(path, 23, $"wrong key: the image is encrypted with {Name(header.Encryption)}, which needs a {KeyLength(header.Encryption)}-byte key, and the key given has {masterKey.Length} bytes");
        var key = DeriveImageKey(masterKey, header.Encryption, header.ImageId, header.KeySalt.Span);
        if (!CryptographicOperations.FixedTimeEquals(KeyCheck(key, header), header.KeyCheck.Span))
            throw new ImageFormatException(path, 64, "wrong key: the key check in the header does not match (another key, or the header was altered)");
        return new ImageCipher(key, header.Encryption);
    }

    /// <summary>Another instance with the same image key, for another thread.</summary>
    public ImageCipher Clone() => new((byte[])_imageKey.Clone(), Scheme);

    private static byte[] KeyCheck(byte[] imageKey, ImageHeader header)
    {
        var bytes = new byte[ImageFormat.FileHeaderSize];
        (header with { KeyCheck = new byte[ImageFormat.KeyCheckSize] }).Write(bytes);
        return HMACSHA256.HashData(imageKey, bytes.AsSpan(0, 64))[..ImageFormat.KeyCheckSize];
    }

    private static void Nonce(Span<byte> nonce, ulong sequence)
    {
        nonce.Clear();
        BinaryPrimitives.WriteUInt64LittleEndian(nonce, sequence);
    }

    /// <summary>Encrypts <paramref name="plain"/> into <paramref name="stored"/> (plain length + tag); they may be the same memory.</summary>
    public void Encrypt(in RecordHeader header, ReadOnlySpan<byte> plain, Span<byte> stored)
    {
        Span<byte> nonce = stackalloc byte[12];
        Nonce(nonce, header.Sequence);
        Span<byte> aad = stackalloc byte[RecordHeader.AuthenticatedSize];
        header.WriteAuthenticated(aad);
        _aes.Encrypt(nonce, plain, stored[..plain.Length], stored.Slice(plain.Length, ImageFormat.TagSize), aad);
    }

    /// <summary>Decrypts and authenticates a payload; false if it was not sealed by this key with this header.</summary>
    public bool TryDecrypt(in RecordHeader header, ReadOnlySpan<byte> stored, Span<byte> plain)
    {
        Span<byte> nonce = stackalloc byte[12];
        Nonce(nonce, header.Sequence);
        Span<byte> aad = stackalloc byte[RecordHeader.AuthenticatedSize];
        header.WriteAuthenticated(aad);
        int length = stored.Length - ImageFormat.TagSize;
        try
        {
            _aes.Decrypt(nonce, stored[..length], stored[length..], plain[..length], aad);
            return true;
        }
        catch (AuthenticationTagMismatchException)
        {
            return false;
        }
    }

    public void Dispose()
    {
        _aes.Dispose();
        CryptographicOperations.ZeroMemory(_imageKey);
    }
}
