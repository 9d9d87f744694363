using System.Globalization;
using System.Net;
using Memcr.Linux.Kernel;

namespace Memcr.Dump.Sockets;

/// <summary>
/// CRIU's nftables network lock: between a dump and its restore, packets of the dumped TCP
/// connections are dropped, so that the kernel never answers the peer with a reset for a socket
/// that is gone. One table per dump, named as CRIU names it (inet CRIU-&lt;run id&gt;, cut to
/// CRIU's 31 characters) so that CRIU's restore of our dump removes ours and ours removes CRIU's.
/// The table's comment names the dump: a table left by a memcr that was killed during a dump is
/// found and removed by the next dump or restore.
/// </summary>
internal sealed class NetworkLock
{
    private const string Prefix = "CRIU-";
    private const string CommentHead = "memcr dump of pid ";

    private NetworkLock(string table) => Table = table;

    /// <summary>"CRIU-f7700e05-c885-4635-84", as CRIU's table[32] keeps it.</summary>
    public string Table { get; }

    public static string TableOf(string runId) => Prefix + runId[..Math.Min(21, runId.Length)];

    /// <summary>Makes the lock table of a dump (chains and sets as CRIU makes them, no connection yet).</summary>
    public static NetworkLock Create(string runId, int root, string dir)
    {
        var lk = new NetworkLock(TableOf(runId));
        string t = $"inet {lk.Table}";
        // nft strings cannot hold a double quote; the comment is at most 128 bytes.
        string where = dir.Replace('"', '\'');
        string comment = $"{CommentHead}{root} by memcr {Environment.ProcessId}{(where.Length <= 80 ? $" into {where}" : "")}";
        Run($$"""
            add table {{t}} { comment "{{comment}}"; }
            add chain {{t}} output { type filter hook output priority 0; }
            add rule {{t}} output meta mark 0xc114 accept
            add chain {{t}} input { type filter hook input priority 0; }
            add rule {{t}} input meta mark 0xc114 accept
            add set {{t}} conns4 { type ipv4_addr . inet_service . ipv4_addr . inet_service; }
            add rule {{t}} output ip saddr . tcp sport . ip daddr . tcp dport @conns4 drop
            add rule {{t}} input ip saddr . tcp sport . ip daddr . tcp dport @conns4 drop
            add set {{t}} conns6 { type ipv6_addr . inet_service . ipv6_addr . inet_service; }
            add rule {{t}} output ip6 saddr . tcp sport . ip6 daddr . tcp dport @conns6 drop
            add rule {{t}} input ip6 saddr . tcp sport . ip6 daddr . tcp dport @conns6 drop
            """, $"cannot lock the network (nftables table {lk.Table})");
        return lk;
    }

    /// <summary>Drops every packet of these connections, both ways, from now on (one transaction).</summary>
    public void Add(IEnumerable<InetSocketInfo> connections)
    {
        var commands = new System.Text.StringBuilder();
        foreach (var c in connections)
        {
            var (family, src, dst) = Addresses(c);
            string set = family == InetDiag.AfInet ? "conns4" : "conns6";
            commands.Append(CultureInfo.InvariantCulture, $"add element inet {Table} {set} {{ {src} . {c.SourcePort} . {dst} . {c.DestinationPort} }}\n");
            commands.Append(CultureInfo.InvariantCulture, $"add element inet {Table} {set} {{ {dst} . {c.DestinationPort} . {src} . {c.SourcePort} }}\n");
        }
        if (commands.Length > 0)
            Run(commands.ToString(), $"cannot lock the dumped TCP connections (nftables table {Table})");
    }

    /// <summary>IPv4 connections of an IPv6 socket (::ffff:a.b.c.d) are locked as IPv4, as their packets are.</summary>
    private static (int Family, string Source, string Destination) Addresses(InetSocketInfo c)
    {
        var src = new IPAddress(c.Source);
        var dst = new IPAddress(c.Destination);
        if (c.Family == InetDiag.AfInet6 && src.IsIPv4MappedToIPv6 && dst.IsIPv4MappedToIPv6)
            return (InetDiag.AfInet, src.MapToIPv4().ToString(), dst.MapToIPv4().ToString());
        return (c.Family, src.ToString(), dst.ToString());
    }

    public void Remove() => Remove(Table);

    /// <summary>Removes a lock table; one that is not there is no error (CRIU's may never have been made).</summary>
    public static bool Remove(string table)
    {
        if (!Exists(table))
            return false;
        Run($"delete table inet {table}", $"cannot unlock the network (nftables table {table})");
        return true;
    }

    public static bool Exists(string table) => LockTables().Contains(table);

    /// <summary>Every CRIU lock table there is.</summary>
    public static List<string> LockTables()
    {
        string listed = Run("list tables inet", "cannot list the nftables tables");
        return [.. listed.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(l => l.Split(' '))
            .Where(w => w.Length == 3 && w[0] == "table" && w[1] == "inet" && w[2].StartsWith(Prefix, StringComparison.Ordinal))
            .Select(w => w[2])];
    }

    /// <summary>
    /// Removes the lock tables of memcr dumps that can no longer be restored: their memcr is gone
    /// and either their tree still runs (the dump never finished) or their directory holds no
    /// finished dump of that lock.
    /// </summary>
    public static void RemoveStale(CriuLog log)
    {
        if (!NfTables.Available || !KernelFeatures.Has(KernelFeatures.NetAdmin))
            return;
        try
        {
            foreach (string table in LockTables())
            {
                string text = Run($"list table inet {table}", $"cannot read nftables table {table}");
                int at = text.IndexOf("comment \"" + CommentHead, StringComparison.Ordinal);
                if (at < 0)
                    continue; // CRIU's own, or not ours to judge
                var words = text[(at + 9 + CommentHead.Length)..].Split('"')[0].Split(' ', 6);
                // "ROOT by memcr PID[ into DIR]"
                if (words.Length < 4 || !int.TryParse(words[0], CultureInfo.InvariantCulture, out int root) || !int.TryParse(words[3], CultureInfo.InvariantCulture, out int memcr))
                    continue;
                if (Directory.Exists($"/proc/{memcr}"))
                    continue; // its dump or restore is still going on
                string? dir = words.Length == 6 && words[4] == "into" ? words[5] : null;
                bool treeRuns = Directory.Exists($"/proc/{root}");
                bool finished = dir is not null && FinishedDumpOf(dir, table);
                if (treeRuns || (dir is not null && !finished))
                {
                    Run($"delete table inet {table}", $"cannot remove nftables table {table}");
                    log.Warn($"removed the network lock {table} left by a memcr dump of pid {root} that did not finish");
                }
            }
        }
        catch (CriuModeException e)
        {
            log.Warn($"cannot look for network locks left behind: {e.Message}");
        }
    }

    private static bool FinishedDumpOf(string dir, string table)
    {
        try
        {
            var d = new Memcr.CriuImages.Explore.DumpDirectory(dir);
            return d.Has(Memcr.CriuImages.ImageKinds.Inventory)
                && d.All<Memcr.CriuImages.inventory_entry>(Memcr.CriuImages.ImageKinds.Inventory) is [var inv, ..]
                && TableOf(inv.DumpCriuRunId) == table;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or Memcr.CriuImages.CriuImageException)
        {
            return false;
        }
    }

    private static string Run(string commands, string what)
    {
        try
        {
            return NfTables.Run(commands);
        }
        catch (NfTablesException e)
        {
            // nft's message is its error, then the command and carets under it: the first line says it.
            string first = e.Message.Split('\n')[0];
            string hint = first.Contains("Operation not permitted", StringComparison.Ordinal) ? " (nftables needs CAP_NET_ADMIN)" : "";
            throw new CriuModeException($"{what}: {first}{hint}");
        }
    }
}
