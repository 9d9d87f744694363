using System.Runtime.InteropServices;

namespace Memcr.Linux.Kernel;

/// <summary>An nftables command the kernel or libnftables refused; the message is nft's own.</summary>
public sealed class NfTablesException(string message) : Exception(message);

/// <summary>
/// nftables through libnftables (the library behind nft): commands in nft's language, run as
/// one transaction each, with nft's error text when they fail. Needs CAP_NET_ADMIN and the
/// libnftables1 package.
/// </summary>
public static partial class NfTables
{
    private const string Library = "libnftables.so.1";

    /// <summary>Runs <paramref name="commands"/> (one per line) as one transaction; returns what nft printed.</summary>
    public static string Run(string commands)
    {
        nint ctx;
        try
        {
            ctx = nft_ctx_new(0);
        }
        catch (DllNotFoundException)
        {
            throw new NfTablesException($"{Library} cannot be loaded: install nftables (apt-get install nftables)");
        }
        if (ctx == 0)
            throw new NfTablesException("nft_ctx_new failed");
        try
        {
            if (nft_ctx_buffer_output(ctx) != 0 || nft_ctx_buffer_error(ctx) != 0)
                throw new NfTablesException("libnftables cannot buffer its output");
            int rc = nft_run_cmd_from_buffer(ctx, commands);
            if (rc != 0)
            {
                string error = Marshal.PtrToStringUTF8(nft_ctx_get_error_buffer(ctx))?.Trim() ?? "";
                throw new NfTablesException(error.Length > 0 ? error : $"nft refused: {commands.Trim()}");
            }
            return Marshal.PtrToStringUTF8(nft_ctx_get_output_buffer(ctx)) ?? "";
        }
        finally
        {
            nft_ctx_free(ctx);
        }
    }

    /// <summary>Whether libnftables can be loaded here.</summary>
    public static bool Available => NativeLibrary.TryLoad(Library, out _);

    [LibraryImport(Library)]
    private static partial nint nft_ctx_new(uint flags);

    [LibraryImport(Library)]
    private static partial void nft_ctx_free(nint ctx);

    [LibraryImport(Library)]
    private static partial int nft_ctx_buffer_output(nint ctx);

    [LibraryImport(Library)]
    private static partial int nft_ctx_buffer_error(nint ctx);

    [LibraryImport(Library)]
    private static partial nint nft_ctx_get_output_buffer(nint ctx);

    [LibraryImport(Library)]
    private static partial nint nft_ctx_get_error_buffer(nint ctx);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int nft_run_cmd_from_buffer(nint ctx, string buf);
}
