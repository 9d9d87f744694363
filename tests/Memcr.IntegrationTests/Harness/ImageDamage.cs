namespace Memcr.IntegrationTests.Harness;

/// <summary>Ways a live image gets damaged while its process is checkpointed.</summary>
public static class ImageDamage
{
    /// <summary>
    /// "flip": one bit in the middle; "flip-last": one bit in the last page record of a memcr image
    /// (just before its index); "truncate": cut in half; "delete": removed. For CRIU images:
    /// "magic": the image's own magic overwritten (another kind of image); "length": the first
    /// entry's length says far more than the file holds.
    /// </summary>
    public static void Apply(string image, string damage)
    {
        long length = new FileInfo(image).Length;
        switch (damage)
        {
            case "flip":
                using (var f = File.OpenHandle(image, FileMode.Open, FileAccess.ReadWrite))
                {
                    var b = new byte[1];
                    RandomAccess.Read(f, b, length / 2);
                    b[0] ^= 0x10;
                    RandomAccess.Write(f, b, length / 2);
                }
                break;
            case "flip-last":
                using (var f = File.OpenHandle(image, FileMode.Open, FileAccess.ReadWrite))
                {
                    // The end record (72 bytes of payload) closes the file; its first field is the index's offset.
                    var at = new byte[8];
                    RandomAccess.Read(f, at, length - 72);
                    long last = BitConverter.ToInt64(at) - 100;
                    var b = new byte[1];
                    RandomAccess.Read(f, b, last);
                    b[0] ^= 0x10;
                    RandomAccess.Write(f, b, last);
                }
                break;
            case "truncate":
                using (var f = File.OpenHandle(image, FileMode.Open, FileAccess.ReadWrite))
                    RandomAccess.SetLength(f, length / 2);
                break;
            case "delete":
                File.Delete(image);
                break;
            case "magic" or "length":
                using (var f = File.OpenHandle(image, FileMode.Open, FileAccess.ReadWrite))
                    RandomAccess.Write(f, BitConverter.GetBytes(damage == "magic" ? 0x12345678u : 0x7ffffff0u), damage == "magic" ? 4 : 8);
                break;
            default:
                throw new ArgumentException($"unknown damage '{damage}'", nameof(damage));
        }
    }
}
