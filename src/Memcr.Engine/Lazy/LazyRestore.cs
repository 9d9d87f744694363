using System.Diagnostics;
using System.Runtime.ExceptionServices;
using Memcr.Linux;
using Memcr.Linux.Memory;
using Memcr.Linux.Proc;

namespace Memcr.Engine.Lazy;

/// <summary>
/// Serves the pages of a process that runs again before its memory is back. Its dropped anonymous
/// ranges are registered with a userfaultfd made in the process (missing mode): a thread that
/// touches a page still missing waits in the kernel until this answers with UFFDIO_COPY of the
/// whole record around it, while a second thread copies in the rest in image order.
///
/// A reader-writer gate orders every copy with the reading of events: the kernel lets a munmap,
/// madvise or mremap of the process go on only once its event has been read, and refuses copies
/// (EAGAIN) while one is queued; events are read with the gate held for writing and copies are
/// made with it held for reading, so a copy is either done before the pages change or decided
/// after the event was taken into account, and copies run side by side (one thread copies about
/// 500 MB/s here, page allocation being most of it). The fill is the restore's page pipeline
/// (<see cref="RecordPipeline"/>): large O_DIRECT reads overlapped with checking, decoding and
/// copying, in buffers granted by the memory budget; a chain of incremental images is served
/// from each image in turn, its share only (<see cref="LazyImages"/>). Pages the process discards are no
/// longer owed, pages it moves are owed where they went, and a child it forks gets a userfaultfd
/// of its own, served from a copy of what was owed at the fork.
/// </summary>
public sealed class LazyRestore : IDisposable
{
    /// <summary>The features asked of UFFDIO_API: the events that keep <see cref="PendingPages"/> true to the process.</summary>
    public const ulong Features = UserFaultFd.FeatureEventFork | UserFaultFd.FeatureEventRemap
        | UserFaultFd.FeatureEventRemove | UserFaultFd.FeatureEventUnmap;

    /// <summary>
    /// How long the fill holds back after the process runs again: its first touches (each thread's
    /// stack, then its data) wait one after the other on single-record reads, each behind the
    /// fill's reads in flight (with none, resume took 8-10 ms here instead of 4-6).
    /// </summary>
    private const int FillHeadStartMs = 4;

    /// <summary>
    /// The fill reads a record at a time (a plain 1 MiB record with its padding page): a fault's
    /// read waits behind at most that much in flight, and reads of 1 MiB ran as fast as 4 MiB ones
    /// here (dd iflag=direct: 1.5 GB/s). With the eager restore's 4 MiB reads and a 10 ms head
    /// start, touches of a 1 GiB target waited up to 6.5-8.8 ms (p99), now 4-5 ms, and memcr's RSS
    /// was 22-24 MB, now 13-15.
    /// </summary>
    private const int FillReadBytes = (1 << 20) + (64 << 10);

    /// <summary>
    /// Fill reads in flight; a fault's read waits behind them (see <see cref="ServeFaults"/>), and
    /// a thread touching pages at random keeps one going all the time (a fifth to a half of a 1 GiB
    /// image came back through faults in bench/lazy.sh). Into small pages, with fault reads at
    /// real-time priority: with two (in four buffers), all pages were back in 1.10-1.15 times the
    /// eager restore's time; with four (in six), 1.02-1.26 on one day and 0.86-1.11 on the next,
    /// touches waiting about 1 ms longer (p99 5.4 ms instead of 4.4) and memcr's RSS 2 MB larger.
    /// Into huge pages, fault reads at the fill's priority: three gave 0.99, four 0.83-0.94 (p99
    /// 5.5-7.4 ms), six 0.88 (p99 7.7), eight 0.90 (p99 8.7).
    /// </summary>
    private const int FillReaders = 4;

    private readonly ReaderWriterLockSlim _gate = new();
    private readonly object _sync = new();
    private readonly List<Space> _spaces = [];
    private readonly LazyImages _images;
    /// <summary>What faults are answered from (see <see cref="RecordSource.Prepare"/>); disposed with this.</summary>
    private readonly RecordSource _source;
    private readonly int _pid;
    private readonly int _pageSize;
    private readonly Log _log;
    private readonly LazyLedger? _ledger;
    private readonly ulong _totalBytes;
    private readonly long _started = Stopwatch.GetTimestamp();
    private Thread? _faults;
    private Thread? _fill;
    private readonly ManualResetEventSlim _filled = new();
    private volatile bool _over;
    private Exception? _failure;
    private long _demandPages;

    /// <summary>One address space served: the restored process, or a child it forked meanwhile.</summary>
    private sealed class Space(UserFaultFd fd, PendingPages pending)
    {
        public UserFaultFd Fd { get; } = fd;
        public PendingPages Pending { get; } = pending;
        public bool Gone { get; set; }
    }

    private readonly int _parallelism;
    private readonly MemoryBudget _budget;
    private readonly bool _keepCache;
    private readonly bool _writeProtect;

    /// <summary>
    /// Serves <paramref name="pending"/> from <paramref name="images"/> through <paramref name="fd"/>,
    /// answering faults from <paramref name="source"/> (this restore's from now on);
    /// with <paramref name="writeProtect"/> (ranges registered in write-protect mode too, to track
    /// writes) the pages are copied in write-protected, so that only what the process writes
    /// afterwards counts as written.
    /// </summary>
    internal LazyRestore(int pid, LazyImages images, RecordSource source, UserFaultFd fd, PendingPages pending, LazyLedger? ledger, bool writeProtect, CheckpointOptions options, Log log)
    {
        _source = source;
        _pid = pid;
        _parallelism = options.Parallelism;
        _budget = options.Budget ?? new MemoryBudget();
        _keepCache = options.KeepImageCached;
        _ledger = ledger;
        _images = images;
        _writeProtect = writeProtect;
        _pageSize = images.PageSize;
        _log = log;
        _totalBytes = pending.Bytes;
        _spaces.Add(new Space(fd, pending));
    }

    /// <summary>
    /// Why <paramref name="pid"/> cannot be restored lazily here, or null: the kernel must have
    /// userfaultfd, and the userfaultfd the target makes must let its kernel-mode faults wait (a
    /// read() into a missing page): with vm.unprivileged_userfaultfd at 0 only a target with
    /// CAP_SYS_PTRACE gets that.
    /// </summary>
    public static string? Refusal(int pid)
    {
        const string Sysctl = "/proc/sys/vm/unprivileged_userfaultfd";
        if (!File.Exists(Sysctl))
            return "this kernel has no userfaultfd";
        if (File.ReadAllText(Sysctl).Trim() != "0")
            return null;
        const int CapSysPtrace = 19;
        try
        {
            if ((ProcFs.ReadStatus(pid).CapEff & (1UL << CapSysPtrace)) == 0)
                return $"pid {pid} lacks CAP_SYS_PTRACE and {Sysctl} is 0: a system call of it that touches a missing page would fail instead of waiting";
        }
        catch (ProcessGoneException)
        {
            return null; // the checkpoint says so
        }
        return null;
    }

    /// <summary>Bytes owed when the process resumed.</summary>
    public ulong TotalBytes => _totalBytes;

    /// <summary>Pages copied because a thread was waiting for them.</summary>
    public long PagesOnDemand => Interlocked.Read(ref _demandPages);

    /// <summary>Starts serving: from here the process may run.</summary>
    public void Start()
    {
        _faults = new Thread(ServeFaults) { Name = $"memcr lazy {_pid}", IsBackground = true };
        _fill = new Thread(Fill) { Name = $"memcr fill {_pid}", IsBackground = true };
        _faults.Start();
        _fill.Start();
    }

    /// <summary>
    /// Waits until every page is back (or the process has gone); returns how long it took from
    /// the start. Events are still read after that, until <see cref="Dispose"/>: a process whose
    /// munmap or fork waits for its event to be read must not wait for ever. Throws what stopped
    /// the serving, if anything did.
    /// </summary>
    public TimeSpan WaitFilled()
    {
        _filled.Wait();
        var took = Stopwatch.GetElapsedTime(_started);
        if (_failure is { } e)
            ExceptionDispatchInfo.Throw(e);
        return took;
    }

    /// <summary>Waits up to <paramref name="timeoutMs"/> for every page to be back (or the serving to stop); true once it is.</summary>
    public bool Filled(int timeoutMs) => _filled.Wait(timeoutMs);

    /// <summary>Whether the restored process is still there (it may exit or be killed while served).</summary>
    public bool TargetAlive
    {
        get
        {
            lock (_sync)
                return !_spaces[0].Gone;
        }
    }

    /// <summary>What stopped the serving before every page was back (a damaged record, say), if anything did.</summary>
    public Exception? Failure
    {
        get
        {
            lock (_sync)
                return _failure;
        }
    }

    private void Fail(Exception e)
    {
        lock (_sync)
            _failure ??= e;
        _filled.Set();
    }

    /// <summary>Reads messages and answers faults until disposed; sets <see cref="_filled"/> once nothing is owed.</summary>
    private void ServeFaults()
    {
        var messages = new UserFaultMessage[64];
        var waiting = new List<(Space Space, ulong Page)>();
        var source = _source;
        int load = -1;
        // A thread waits on each read made here. Into small pages, the fill's reads are many
        // requests of hundreds of segments each, which back up in the I/O scheduler (mq-deadline),
        // and it held a fault's read behind them for up to half a second (touches waited up to
        // 320 ms): a real-time priority puts it first. Into huge pages (see BufferPool) nothing
        // backs up, and that priority would cost: mq-deadline dispatches no other read while a
        // real-time one is in flight, and as a thread touching pages at random keeps one going all
        // the time, the disk ran one read deep (all back in 1.14-1.28 times the eager restore's
        // time instead of 0.83-0.94, touches waiting about 1 ms less at p99).
        if (!IoMemory.HugePages && !Linux.Kernel.ProcessCalls.RaiseThreadIoPriority())
            _log.Debug($"cannot raise the I/O priority of the thread that answers faults: {SyscallException.Describe(Errno.Last)}");
        try
        {
            while (!_over)
            {
                List<UserFaultFd> fds;
                lock (_sync)
                    fds = [.. _spaces.Where(s => !s.Gone).Select(s => s.Fd)];
                if (fds.Count == 0)
                {
                    _filled.Set();
                    Thread.Sleep(50);
                    continue;
                }
                if (load < 0)
                    UserFaultFd.Poll(fds, waiting.Count > 0 ? 1 : 50);
                _gate.EnterWriteLock();
                try
                {
                    lock (_sync)
                    {
                        foreach (var space in _spaces.ToArray())
                            TakeMessages(space, messages, waiting);
                    }
                }
                finally
                {
                    _gate.ExitWriteLock();
                }
                _gate.EnterReadLock();
                try
                {
                    waiting.RemoveAll(w => Answer(w.Space, w.Page, source));
                }
                finally
                {
                    _gate.ExitReadLock();
                }
                lock (_sync)
                {
                    load = waiting.Select(w => w.Space.Pending.Find(w.Page)?.Record ?? -1).FirstOrDefault(r => r >= 0, -1);
                    if (!ProcFs.Exists(_pid))
                        _spaces[0].Gone = true;
                    if (_spaces.All(s => s.Gone || s.Pending.IsEmpty) && waiting.Count == 0)
                        _filled.Set();
                }
                // Read outside the gate: the fill goes on copying meanwhile, and the faults are
                // answered on the next turn from what is owed then.
                if (load >= 0)
                    source.Load(load);
            }
        }
        catch (Exception e)
        {
            Fail(e);
        }
    }

    private void TakeMessages(Space space, UserFaultMessage[] messages, List<(Space, ulong)> waiting)
    {
        if (space.Gone)
            return;
        int n;
        while ((n = space.Fd.Read(messages)) > 0)
        {
            foreach (var m in messages.AsSpan(0, n))
            {
                switch (m.Event)
                {
                    case UserFaultEvent.PageFault:
                        waiting.Add((space, m.FaultAddress & ~(ulong)(_pageSize - 1)));
                        break;
                    case UserFaultEvent.Remove or UserFaultEvent.Unmap:
                        space.Pending.Remove(m.A, m.B);
                        if (space == _spaces[0])
                            _ledger?.Remove(m.A, m.B);
                        break;
                    case UserFaultEvent.Remap:
                        space.Pending.Move(m.A, m.B, m.C);
                        if (space == _spaces[0])
                            _ledger?.Move(m.A, m.B, m.C);
                        break;
                    case UserFaultEvent.Fork:
                        var child = new UserFaultFd(new Microsoft.Win32.SafeHandles.SafeFileHandle((nint)(int)m.A, ownsHandle: true), $"a child of pid {_pid}");
                        _spaces.Add(new Space(child, space.Pending.Clone()));
                        _log.Debug($"pid {_pid} forked: serving the child's pages too");
                        break;
                }
            }
            if (n < messages.Length)
                break;
        }
    }

    /// <summary>Answers a fault: the record around the page (once read), or a zero page if nothing is owed there. False to try again later.</summary>
    private bool Answer(Space space, ulong page, RecordSource source)
    {
        if (space.Gone)
            return true;
        PendingExtent? found;
        lock (_sync)
            found = space.Pending.Find(page);
        if (found is not { } owed)
        {
            int r = space.Fd.ZeroPage(page, (ulong)_pageSize);
            return r != -Errno.EAGAIN;
        }
        if (!source.Holds(owed.Record))
            return false;
        bool done = CopyRecord(space, owed.Record, source.Pages(owed.Record), out ulong copied);
        Interlocked.Add(ref _demandPages, (long)(copied / (ulong)_pageSize));
        return done;
    }

    /// <summary>Copies what <paramref name="space"/> still owes of a record (<paramref name="copied"/>: bytes copied, not those found there already); false if the kernel asked to wait for its events.</summary>
    private bool CopyRecord(Space space, int record, nint pages, out ulong copied)
    {
        copied = 0;
        List<PendingExtent> owed;
        lock (_sync)
            owed = space.Pending.OfRecord(record);
        foreach (var e in owed)
        {
            ulong done = 0;
            bool pageByPage = false;
            while (done < e.Length)
            {
                // One copy acts within one VMA: a record that spans several (adjacent VMAs alike
                // but for their flags, or split by mprotect since) is copied a page at a time
                // from the first boundary on.
                ulong length = pageByPage ? (ulong)_pageSize : e.Length - done;
                long r = space.Fd.Copy(e.Start + done, pages + e.Offset + (nint)done, length, _writeProtect);
                if (r > 0)
                {
                    done += (ulong)r;
                    copied += (ulong)r;
                }
                else if (r == -Errno.EEXIST)
                    done += (ulong)_pageSize; // there already (a fault was answered with it meanwhile)
                else if (r == -Errno.EAGAIN)
                    return false;
                else if (r == -Errno.ESRCH)
                {
                    space.Gone = true; // the process has gone
                    break;
                }
                else if (r == -Errno.ENOENT && !pageByPage)
                {
                    pageByPage = true;
                }
                else if (r == -Errno.ENOENT)
                {
                    // Not registered there: only after the process unmapped it (its event removes
                    // what was owed), as everything owed was registered before it ran.
                    _log.Debug($"{space.Fd.Owner} page {e.Start + done:x} is no longer mapped");
                    done += (ulong)_pageSize;
                }
                else
                    throw new SyscallException("ioctl(UFFDIO_COPY)", $"{space.Fd.Owner} [{e.Start + done:x}-{e.End:x}]", (int)-r);
            }
            lock (_sync)
                space.Pending.Remove(e.Start, e.End);
        }
        return true;
    }

    /// <summary>Copies in everything still owed, through the restore's page pipeline; batches nothing is owed of are skipped.</summary>
    private void Fill()
    {
        try
        {
            // The faults first: if every page came back (or the process went) meanwhile, the fill finds nothing owed.
            _filled.Wait(FillHeadStartMs);
            for (int k = 0; k < _images.Images.Count && !_over && !_filled.IsSet; k++)
            {
                int image = k;
                new RecordPipeline(_images.Images[k], _parallelism, _budget, _keepCache, _log, maxReadBytes: FillReadBytes, readers: FillReaders)
                    .Run((batch, _) => CopyBatch(image, batch), record => Owed(image, record));
            }
            // Said here rather than by the fault thread, which may be waiting up to 50 ms for a fault
            // (the copies have woken every thread that waited on one of these pages).
            lock (_sync)
            {
                if (_spaces.All(s => s.Gone || s.Pending.IsEmpty))
                    _filled.Set();
            }
        }
        catch (Exception e)
        {
            Fail(e);
        }
    }

    /// <summary>
    /// Whether anything of record <paramref name="record"/> of image <paramref name="image"/> (an
    /// index into <see cref="LazyImages.Images"/>) is still owed: the fill reads only those, so that
    /// a record a fault brought back is not read a second time.
    /// </summary>
    private bool Owed(int image, int record)
    {
        int number = _images.Number(image, record);
        lock (_sync)
            return _spaces.Any(s => !s.Gone && s.Pending.Owes(number));
    }

    /// <summary>Copies the records of a batch of image <paramref name="image"/> to every space that still owes them; false once the serving is over.</summary>
    private bool CopyBatch(int image, DecodedBatch batch)
    {
        for (int i = batch.Batch.First; i < batch.Batch.First + batch.Batch.Count; i++)
        {
            int r = _images.Number(image, i);
            while (true)
            {
                if (_over || _filled.IsSet)
                    return false;
                bool done = true;
                _gate.EnterReadLock();
                try
                {
                    Space[] spaces;
                    lock (_sync)
                        spaces = [.. _spaces.Where(s => !s.Gone)];
                    foreach (var space in spaces)
                        done &= CopyRecord(space, r, batch.Pages(i), out _);
                }
                finally
                {
                    _gate.ExitReadLock();
                }
                if (done)
                    break;
                Thread.Sleep(1); // an event is queued: the fault thread reads it first
            }
        }
        return true;
    }

    /// <summary>
    /// After <see cref="WaitFilled"/>: the ranges still registered in the restored process (where it
    /// did not change them), taken off the userfaultfd so that its VMAs are as before.
    /// </summary>
    public void Unregister()
    {
        var fd = _spaces[0].Fd;
        foreach (var (start, end) in Registered(_pid, writeProtectToo: true))
        {
            int errno = fd.Unregister(start, end);
            if (errno != 0 && errno != Errno.ESRCH)
                _log.Error($"cannot take pid {_pid} [{start:x}-{end:x}] off its userfaultfd: {SyscallException.Describe(errno)}");
        }
    }

    /// <summary>
    /// Wakes every thread of the process that waits on a fault: after a take-over, faults whose
    /// messages the memcr that died had read but not answered are raised anew, to this one.
    /// </summary>
    public void WakeAll()
    {
        foreach (var (start, end) in Registered(_pid))
            _spaces[0].Fd.Wake(start, end);
    }

    /// <summary>
    /// The ranges of <paramref name="pid"/> registered with a userfaultfd in missing mode (smaps
    /// VmFlags "um"), with <paramref name="writeProtectToo"/> also those in write-protect mode only
    /// ("uw"), adjacent ones merged.
    /// </summary>
    public static List<(ulong Start, ulong End)> Registered(int pid, bool writeProtectToo = false)
    {
        var registered = new List<(ulong Start, ulong End)>();
        ProcFs.ReadSmaps(pid, vma =>
        {
            if (vma.HasFlag("um") || (writeProtectToo && vma.HasFlag("uw")))
                registered.Add((vma.Start, vma.End));
        });
        return VmaSelector.AdjacentSpans(registered).ToList();
    }

    /// <summary>Whether ranges of <paramref name="pid"/> are registered in missing and write-protect modes at once: a lazy restore that tracks writes (--incremental).</summary>
    public static bool TracksWrites(int pid)
    {
        bool both = false;
        ProcFs.ReadSmaps(pid, vma => both |= vma.HasFlag("um") && vma.HasFlag("uw"));
        return both;
    }

    /// <summary>Stops serving (once the process's copy of the userfaultfd is closed, or it has gone) and closes this side's descriptors.</summary>
    public void Dispose()
    {
        _over = true;
        _fill?.Join();
        _faults?.Join();
        _source.Dispose();
        foreach (var s in _spaces)
            s.Fd.Dispose();
        _ledger?.Dispose();
        _filled.Dispose();
        _gate.Dispose();
    }
}
