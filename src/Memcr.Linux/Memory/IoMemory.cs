using System.Runtime.InteropServices;

namespace Memcr.Linux.Memory;

/// <summary>
/// Anonymous mappings for large I/O buffers, placed on a huge-page boundary and advised
/// MADV_HUGEPAGE: what the disk reads into and writes from is then made of a few physically
/// contiguous 2 MiB pieces rather than hundreds of 4 KiB pages, and an O_DIRECT request carries a
/// segment per piece. Here (virtio disk) that decides the speed of a read: 1 GiB read with O_DIRECT
/// in 1 MiB reads, four in flight, took 320-360 ms into huge pages and 500-1200 ms into small ones
/// (as many requests, about 1000, can take either time: it is the segments that cost). An eager
/// restore of a 1 GiB process went from 580-650 ms to 430-480 and its checkpoint from 563 ms to 523
/// (bench/bench.sh, bench/lazy.sh). Where the kernel has no huge page at hand (or transparent huge
/// pages are off) the mapping is made of small pages, as before.
/// </summary>
public static class IoMemory
{
    /// <summary>The size of a huge page (a PMD mapping): 2 MiB on x86_64 and on arm64 with 4 KiB pages.</summary>
    public static readonly long HugePageBytes = ReadHugePageBytes();

    /// <summary>Whether I/O buffers are made of huge pages here: the kernel has transparent huge pages, and they are not off.</summary>
    public static readonly bool HugePages = ReadHugePagesOn();

    /// <summary>
    /// Maps <paramref name="length"/> bytes (rounded up to a page) on a huge-page boundary and
    /// advises huge pages for them; nothing is populated yet (<see cref="Populate"/>).
    /// </summary>
    internal static nint Map(long length)
    {
        long bytes = RoundUp(length, Environment.SystemPageSize);
        long huge = HugePageBytes;
        nint p = Interop.Libc.mmap(0, (nuint)(bytes + huge), Interop.Libc.PROT_READ | Interop.Libc.PROT_WRITE,
            Interop.Libc.MAP_PRIVATE | Interop.Libc.MAP_ANONYMOUS, -1, 0);
        if (p == Interop.Libc.MAP_FAILED)
            throw new OutOfMemoryException($"cannot map a {length}-byte buffer: mmap: {SyscallException.Describe(Marshal.GetLastPInvokeError())}");
        nint start = (nint)RoundUp(p, huge);
        nint end = start + (nint)bytes;
        // What lies before the boundary and after the buffer is given back at once.
        if (start > p)
            Interop.Libc.munmap(p, (nuint)(start - p));
        if (p + (nint)(bytes + huge) > end)
            Interop.Libc.munmap(end, (nuint)(p + (nint)(bytes + huge) - end));
        // Refused only where the kernel has no transparent huge pages: small pages do then.
        Interop.Libc.madvise(start, (nuint)bytes, Interop.Libc.MADV_HUGEPAGE);
        return start;
    }

    /// <summary>
    /// Makes [<paramref name="start"/>, +<paramref name="length"/>) resident at once: every buffer is
    /// written soon after it is made, and faulting it in page by page from the threads of a
    /// pipeline cost more than the copying (perf showed first writes into fresh buffers taking
    /// faults, each with a TLB shootdown to the other CPU).
    /// </summary>
    internal static unsafe void Populate(nint start, long length)
    {
        if (Interop.Libc.madvise(start, (nuint)length, Interop.Libc.MADV_POPULATE_WRITE) == 0 || Marshal.GetLastPInvokeError() != Errno.EINVAL)
            return; // out of memory: the pages are faulted in as they are used, or not at all
        // Before Linux 5.14: a write to every page does it.
        int page = Environment.SystemPageSize;
        for (long at = 0; at < length; at += page)
            ((byte*)start)[at] = 0;
    }

    /// <summary><paramref name="value"/> rounded up to a multiple of <paramref name="unit"/>.</summary>
    internal static long RoundUp(long value, long unit) => (value + unit - 1) / unit * unit;

    private static bool ReadHugePagesOn()
    {
        try
        {
            return !File.ReadAllText("/sys/kernel/mm/transparent_hugepage/enabled").Contains("[never]", StringComparison.Ordinal);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    private static long ReadHugePageBytes()
    {
        try
        {
            return long.Parse(File.ReadAllText("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size").Trim(), System.Globalization.CultureInfo.InvariantCulture);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException or OverflowException)
        {
            return 2 << 20;
        }
    }
}
