using System.Buffers.Binary;
using System.Runtime.Intrinsics.X86;
using Memcr.CriuImages;

namespace Memcr.Dump.Arch;

/// <summary>
/// x86_64 thread state in CRIU's form: struct user_regs_struct as user_x86_regs_entry, the XSAVE
/// area as user_x86_fpregs_entry (fxsave fields and the xsave components), and the GDT TLS entries.
/// </summary>
internal static class X64ThreadState
{
    public const int NtPrfpreg = 2;
    public const int NtX86Xstate = 0x202;
    public const int RegsSize = 27 * 8;
    public const int XstateBufferSize = 16384;
    public const int TlsEntries = 3;
    public const int TlsFirst = 12; // GDT_ENTRY_TLS_MIN

    private const long ErestartSys = -512, ErestartNoIntr = -513, ErestartNoHand = -514, ErestartRestartBlock = -516, Eintr = -4;

    // user_regs_struct word indexes.
    private const int Rax = 10, OrigRax = 15, Rip = 16;

    /// <summary>
    /// The registers as CRIU keeps them: a thread stopped in a syscall that the kernel would restart
    /// is set to make the syscall again (ax = the syscall number, ip back on the instruction); one
    /// that would restart through restart_syscall gets EINTR, as after a signal with no restart.
    /// </summary>
    public static user_x86_regs_entry Registers(ReadOnlySpan<byte> raw)
    {
        var w = new ulong[27];
        for (int i = 0; i < w.Length; i++)
            w[i] = BinaryPrimitives.ReadUInt64LittleEndian(raw[(i * 8)..]);
        ulong W(int i) => w[i];
        ulong ax = W(Rax), ip = W(Rip);
        long origAx = (long)W(OrigRax);
        if (origAx >= 0)
        {
            switch ((long)ax)
            {
                case ErestartSys or ErestartNoIntr or ErestartNoHand:
                    ax = (ulong)origAx;
                    ip -= 2;
                    break;
                case ErestartRestartBlock:
                    ax = unchecked((ulong)Eintr);
                    break;
            }
        }
        return new user_x86_regs_entry
        {
            R15 = W(0), R14 = W(1), R13 = W(2), R12 = W(3), Bp = W(4), Bx = W(5), R11 = W(6), R10 = W(7), R9 = W(8), R8 = W(9),
            Ax = ax, Cx = W(11), Dx = W(12), Si = W(13), Di = W(14), OrigAx = W(OrigRax), Ip = ip, Cs = W(17), Flags = W(18),
            Sp = W(19), Ss = W(20), FsBase = W(21), GsBase = W(22), Ds = W(23), Es = W(24), Fs = W(25), Gs = W(26),
            Mode = user_x86_regs_mode.Native,
        };
    }

    /// <summary>
    /// The raw register set to resume a thread with. orig_ax is -1: the image's registers already
    /// say how an interrupted syscall goes on, and the kernel must not restart it a second time.
    /// </summary>
    public static byte[] RawRegisters(user_x86_regs_entry r)
    {
        var raw = new byte[RegsSize];
        ulong[] words =
        [
            r.R15, r.R14, r.R13, r.R12, r.Bp, r.Bx, r.R11, r.R10, r.R9, r.R8, r.Ax, r.Cx, r.Dx, r.Si, r.Di, ulong.MaxValue,
            r.Ip, r.Cs, r.Flags, r.Sp, r.Ss, r.FsBase, r.GsBase, r.Ds, r.Es, r.Fs, r.Gs,
        ];
        for (int i = 0; i < words.Length; i++)
            BinaryPrimitives.WriteUInt64LittleEndian(raw.AsSpan(i * 8), words[i]);
        return raw;
    }

    /// <summary>Offset and size of XSAVE component <paramref name="feature"/> in the standard format (CPUID leaf 0xD).</summary>
    private static (int Offset, int Size) Component(int feature)
    {
        var (eax, ebx, _, _) = X86Base.CpuId(0xD, feature);
        return (ebx, eax);
    }

    /// <summary>XSAVE components this CPU has: CPUID leaf 0xD, sub-leaf 0, EDX:EAX.</summary>
    public static ulong CpuFeatures()
    {
        var (eax, _, _, edx) = X86Base.CpuId(0xD, 0);
        return (uint)eax | ((ulong)(uint)edx << 32);
    }

    /// <summary>
    /// The XSAVE components of the CPU a thread was dumped on, as far as its image shows them: a
    /// component's state is recorded only when that CPU had it, and xstate_bv names those in use.
    /// </summary>
    public static ulong DumpedFeatures(user_x86_fpregs_entry fp)
    {
        if (fp.Xsave is not { } xs)
            return 3;
        ulong features = 3 | xs.XstateBv;
        if (xs.YmmhSpace.Count > 0) features |= 1UL << 2;
        if (xs.BndregState.Count > 0) features |= 1UL << 3;
        if (xs.BndcsrState.Count > 0) features |= 1UL << 4;
        if (xs.OpmaskReg.Count > 0) features |= 1UL << 5;
        if (xs.ZmmUpper.Count > 0) features |= 1UL << 6;
        if (xs.Hi16Zmm.Count > 0) features |= 1UL << 7;
        if (xs.Pkru.Count > 0) features |= 1UL << 9;
        return features;
    }

    /// <summary>AVX and AVX-512: libraries choose code that uses them once, when they start (glibc's string functions do).</summary>
    private const ulong VectorFeatures = (1UL << 2) | (1UL << 5) | (1UL << 6) | (1UL << 7);

    /// <summary>
    /// Why a thread dumped with <paramref name="fp"/> cannot run on a CPU with XSAVE components
    /// <paramref name="here"/>, or null if it can: the dumping CPU had vector extensions this one
    /// lacks (the process may have chosen code that uses them), or the thread was using a component
    /// this one lacks.
    /// </summary>
    public static string? Incompatibility(user_x86_fpregs_entry fp, ulong here)
    {
        ulong needed = (DumpedFeatures(fp) & VectorFeatures) | (fp.Xsave?.XstateBv ?? 0) | 3;
        ulong missing = needed & ~here;
        if (missing == 0)
            return null;
        var names = new List<string>();
        for (int bit = 0; bit < 64; bit++)
        {
            if ((missing & (1UL << bit)) == 0)
                continue;
            string name = bit switch
            {
                2 => "AVX",
                3 or 4 => "MPX",
                5 or 6 or 7 => "AVX-512",
                9 => "protection keys",
                11 or 12 => "CET",
                17 or 18 => "AMX",
                _ => $"XSAVE component {bit}",
            };
            if (!names.Contains(name))
                names.Add(name);
        }
        return $"the CPU it was dumped on had {string.Join(", ", names)}, which this CPU lacks (XSAVE components 0x{needed:x} needed, 0x{here:x} here)";
    }

    /// <summary>
    /// The XSAVE components the kernel has enabled (XCR0), from an NT_X86_XSTATE buffer: ptrace puts
    /// them in the first of the software bytes of the fxsave area, bytes 464..471 (asm/user.h,
    /// USER_XSTATE_XCR0_WORD). The signal frame's layout of those bytes (magic, size, then the
    /// features at 472) is not ptrace's: read there, the features were 0, and no vector state
    /// beyond the XMM registers was dumped or restored (a thread stopped inside an AVX-512 memcmp
    /// came back with its ZMM registers cleared and found its own buffer changed).
    /// </summary>
    internal static ulong EnabledFeatures(ReadOnlySpan<byte> x) => BinaryPrimitives.ReadUInt64LittleEndian(x[464..]);

    /// <summary>The FPU and vector state of an NT_X86_XSTATE buffer.</summary>
    public static user_x86_fpregs_entry FpRegs(ReadOnlySpan<byte> x)
    {
        var fp = new user_x86_fpregs_entry
        {
            Cwd = BinaryPrimitives.ReadUInt16LittleEndian(x),
            Swd = BinaryPrimitives.ReadUInt16LittleEndian(x[2..]),
            Twd = BinaryPrimitives.ReadUInt16LittleEndian(x[4..]),
            Fop = BinaryPrimitives.ReadUInt16LittleEndian(x[6..]),
            Rip = BinaryPrimitives.ReadUInt64LittleEndian(x[8..]),
            Rdp = BinaryPrimitives.ReadUInt64LittleEndian(x[16..]),
            Mxcsr = BinaryPrimitives.ReadUInt32LittleEndian(x[24..]),
            MxcsrMask = BinaryPrimitives.ReadUInt32LittleEndian(x[28..]),
        };
        fp.StSpace.AddRange(Words32(x.Slice(32, 128)));
        fp.XmmSpace.AddRange(Words32(x.Slice(160, 256)));
        if (x.Length <= 512)
            return fp;
        ulong features = EnabledFeatures(x);
        var xs = new user_x86_xsave_entry { XstateBv = BinaryPrimitives.ReadUInt64LittleEndian(x[512..]) };
        foreach (int f in new[] { 2, 3, 4, 5, 6, 7, 9 })
        {
            if ((features & (1UL << f)) == 0)
                continue;
            var (offset, size) = Component(f);
            if (f == 4)
                size = 16; // BNDCSR: bndcfgu and bndstatus
            if (offset + size > x.Length)
                continue;
            var part = x.Slice(offset, size);
            switch (f)
            {
                case 2: xs.YmmhSpace.AddRange(Words32(part)); break;
                case 3: xs.BndregState.AddRange(Words64(part)); break;
                case 4: xs.BndcsrState.AddRange(Words64(part)); break;
                case 5: xs.OpmaskReg.AddRange(Words64(part)); break;
                case 6: xs.ZmmUpper.AddRange(Words64(part)); break;
                case 7: xs.Hi16Zmm.AddRange(Words64(part)); break;
                case 9: xs.Pkru.AddRange(Words32(part)); break;
            }
        }
        fp.Xsave = xs;
        return fp;
    }

    /// <summary>
    /// Writes the image's FPU state over <paramref name="x"/>, an NT_X86_XSTATE buffer of the new
    /// thread (which gives the size and the features this CPU has).
    /// </summary>
    public static void ApplyFpRegs(user_x86_fpregs_entry fp, Span<byte> x)
    {
        BinaryPrimitives.WriteUInt16LittleEndian(x, (ushort)fp.Cwd);
        BinaryPrimitives.WriteUInt16LittleEndian(x[2..], (ushort)fp.Swd);
        BinaryPrimitives.WriteUInt16LittleEndian(x[4..], (ushort)fp.Twd);
        BinaryPrimitives.WriteUInt16LittleEndian(x[6..], (ushort)fp.Fop);
        BinaryPrimitives.WriteUInt64LittleEndian(x[8..], fp.Rip);
        BinaryPrimitives.WriteUInt64LittleEndian(x[16..], fp.Rdp);
        BinaryPrimitives.WriteUInt32LittleEndian(x[24..], fp.Mxcsr & fp.MxcsrMask);
        PutWords32(fp.StSpace, x.Slice(32, 128));
        PutWords32(fp.XmmSpace, x.Slice(160, 256));
        if (x.Length <= 512 || fp.Xsave is not { } xs)
            return;
        ulong features = EnabledFeatures(x);
        // Only components this CPU has; the legacy x87 and SSE state is always there.
        ulong bv = xs.XstateBv & (features | 3);
        BinaryPrimitives.WriteUInt64LittleEndian(x[512..], bv);
        BinaryPrimitives.WriteUInt64LittleEndian(x[520..], 0); // standard format
        foreach (int f in new[] { 2, 3, 4, 5, 6, 7, 9 })
        {
            if ((features & (1UL << f)) == 0)
                continue;
            var (offset, size) = Component(f);
            if (f == 4)
                size = 16;
            if (offset + size > x.Length)
                continue;
            var part = x.Slice(offset, size);
            switch (f)
            {
                case 2: PutWords32(xs.YmmhSpace, part); break;
                case 3: PutWords64(xs.BndregState, part); break;
                case 4: PutWords64(xs.BndcsrState, part); break;
                case 5: PutWords64(xs.OpmaskReg, part); break;
                case 6: PutWords64(xs.ZmmUpper, part); break;
                case 7: PutWords64(xs.Hi16Zmm, part); break;
                case 9: PutWords32(xs.Pkru, part); break;
            }
        }
    }

    /// <summary>A GDT TLS entry (struct user_desc) as CRIU keeps it.</summary>
    public static user_desc_t Tls(ReadOnlySpan<byte> d)
    {
        uint flags = BinaryPrimitives.ReadUInt32LittleEndian(d[12..]);
        return new user_desc_t
        {
            EntryNumber = BinaryPrimitives.ReadUInt32LittleEndian(d),
            BaseAddr = BinaryPrimitives.ReadUInt32LittleEndian(d[4..]),
            Limit = BinaryPrimitives.ReadUInt32LittleEndian(d[8..]),
            Seg32Bit = (flags & 1) != 0,
            ContentsL = (flags & 2) != 0,
            ContentsH = (flags & 4) != 0,
            ReadExecOnly = (flags & 8) != 0,
            LimitInPages = (flags & 16) != 0,
            SegNotPresent = (flags & 32) != 0,
            Usable = (flags & 64) != 0,
        };
    }

    /// <summary>An entry no one set (what the kernel reports for an unused slot): nothing to restore.</summary>
    public static bool IsEmpty(user_desc_t t) => t.BaseAddr == 0 && t.Limit == 0 && t.SegNotPresent && t.ReadExecOnly;

    public static byte[] RawTls(user_desc_t t)
    {
        var d = new byte[16];
        BinaryPrimitives.WriteUInt32LittleEndian(d, t.EntryNumber);
        BinaryPrimitives.WriteUInt32LittleEndian(d.AsSpan(4), t.BaseAddr);
        BinaryPrimitives.WriteUInt32LittleEndian(d.AsSpan(8), t.Limit);
        uint flags = (t.Seg32Bit ? 1u : 0) | (t.ContentsL ? 2u : 0) | (t.ContentsH ? 4u : 0) | (t.ReadExecOnly ? 8u : 0)
            | (t.LimitInPages ? 16u : 0) | (t.SegNotPresent ? 32u : 0) | (t.Usable ? 64u : 0);
        BinaryPrimitives.WriteUInt32LittleEndian(d.AsSpan(12), flags);
        return d;
    }

    private static uint[] Words32(ReadOnlySpan<byte> b)
    {
        var words = new uint[b.Length / 4];
        for (int i = 0; i < words.Length; i++)
            words[i] = BinaryPrimitives.ReadUInt32LittleEndian(b[(i * 4)..]);
        return words;
    }

    private static ulong[] Words64(ReadOnlySpan<byte> b)
    {
        var words = new ulong[b.Length / 8];
        for (int i = 0; i < words.Length; i++)
            words[i] = BinaryPrimitives.ReadUInt64LittleEndian(b[(i * 8)..]);
        return words;
    }

    private static void PutWords32(Google.Protobuf.Collections.RepeatedField<uint> words, Span<byte> into)
    {
        for (int i = 0; i < words.Count && (i + 1) * 4 <= into.Length; i++)
            BinaryPrimitives.WriteUInt32LittleEndian(into[(i * 4)..], words[i]);
    }

    private static void PutWords64(Google.Protobuf.Collections.RepeatedField<ulong> words, Span<byte> into)
    {
        for (int i = 0; i < words.Count && (i + 1) * 8 <= into.Length; i++)
            BinaryPrimitives.WriteUInt64LittleEndian(into[(i * 8)..], words[i]);
    }
}
