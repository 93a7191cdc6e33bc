"""Exception syndromes (ESR_ELx, Arm ARM DDI 0487 D17.2.37) and the A64 instruction classes they depend on.

Pure functions: no Unicorn, no state. `harness/exceptions.py` uses them to build the ESR of every exception it
takes; Unicorn does not expose the syndrome QEMU's code computes, so the class of an exception is worked out
again here from the instruction word (DDI 0487 C4.1, the A64 encoding index).

* `esr(ec, iss, il)`: EC [31:26], IL [25], ISS [24:0].
* ISS encoders: `iss_sysreg` (EC 0x18: Op0 [21:20], Op2 [19:17], Op1 [16:14], CRn [13:10], Rt [9:5], CRm [4:1],
  Direction [0], 1 = read), `iss_wfx` (EC 0x01: CV, COND = 0xE, TI), `iss_data_abort` (EC 0x24/0x25: ISV, SAS,
  SSE, SRT, SF, AR, EA [9], CM [8], S1PTW [7], WnR [6], DFSC [5:0]), `iss_debug` (breakpoint, watchpoint and
  software step: DFSC/IFSC 0b100010, "debug exception"), `iss_swstep` (ISV [24], EX [6]).
* `data_abort_template(word)`: the instruction-syndrome fields (ISV=1, SAS, SSE, SRT, SF, AR) of a data abort on
  a single general-purpose-register load or store without writeback. QEMU reports them for data aborts taken
  to EL2 only (target/arm/tlb_helper.c `merge_syn_data_abort`), which the Arm ARM allows; so does the harness.
* Classes: `is_sve` (the SVE encoding group, op0 = 0b0010), `is_pauth` (the instructions HCR_EL2.API traps),
  `is_system` (MSR/MRS/SYS/hints/barriers), `wfx_kind`, `is_load_exclusive`, `imm16`.
* `death_status_kind(ec)`: whether an exception nobody handles ends the run as an abort (139: instruction and data
  aborts, PC/SP alignment) or as an undefined instruction (132: everything else); guest_fw/lib/exceptions.c
  exits with the same statuses under QEMU.
"""
from __future__ import annotations

__all__ = ["EC_UNKNOWN", "EC_WFX", "EC_FP", "EC_PAUTH", "EC_ILLEGAL", "EC_SVC64", "EC_HVC64", "EC_SMC64",
           "EC_SYSREG", "EC_SVE", "EC_IABT_LOW", "EC_IABT_CUR", "EC_PC_ALIGN", "EC_DABT_LOW", "EC_DABT_CUR",
           "EC_SP_ALIGN", "EC_BKPT_LOW", "EC_BKPT_CUR", "EC_SSTEP_LOW", "EC_SSTEP_CUR", "EC_WPT_LOW",
           "EC_WPT_CUR", "EC_BRK64", "EC_NAMES", "LOWER_EL_CLASSES", "FSC_SYNC_EXTERNAL", "FSC_ALIGNMENT",
           "FSC_PERMISSION", "FSC_DEBUG", "esr", "ec_of", "imm16", "iss_sysreg", "iss_wfx", "iss_data_abort",
           "iss_debug", "iss_swstep", "data_abort_template", "is_sve", "is_pauth", "is_system", "wfx_kind",
           "is_load_exclusive", "is_abort_class", "lower"]

# Exception classes, ESR_ELx.EC (D17.2.37, Table D17-7)
EC_UNKNOWN = 0x00
EC_WFX = 0x01
EC_FP = 0x07            # access to SIMD&FP trapped by CPACR/CPTR (Unicorn 2.1 never raises it)
EC_PAUTH = 0x09         # PAuth instruction trapped by HCR_EL2.API / SCR_EL3.API
EC_ILLEGAL = 0x0E       # illegal execution state (PSTATE.IL)
EC_SVC64 = 0x15
EC_HVC64 = 0x16
EC_SMC64 = 0x17
EC_SYSREG = 0x18        # MSR, MRS or system instruction trapped
EC_SVE = 0x19           # SVE trapped by CPACR_EL1.ZEN / CPTR_EL2.TZ / CPTR_EL3.EZ
EC_IABT_LOW, EC_IABT_CUR = 0x20, 0x21
EC_PC_ALIGN = 0x22
EC_DABT_LOW, EC_DABT_CUR = 0x24, 0x25
EC_SP_ALIGN = 0x26
EC_BKPT_LOW, EC_BKPT_CUR = 0x30, 0x31     # hardware breakpoint
EC_SSTEP_LOW, EC_SSTEP_CUR = 0x32, 0x33   # software step
EC_WPT_LOW, EC_WPT_CUR = 0x34, 0x35       # watchpoint
EC_BRK64 = 0x3C
EC_NAMES = {EC_UNKNOWN: "unknown reason (undefined instruction)", EC_WFX: "WFI/WFE trapped",
            EC_FP: "SIMD&FP access trapped", EC_PAUTH: "PAuth instruction trapped",
            EC_ILLEGAL: "illegal execution state", EC_SVC64: "SVC", EC_HVC64: "HVC", EC_SMC64: "SMC",
            EC_SYSREG: "MSR/MRS/system instruction trapped", EC_SVE: "SVE access trapped",
            EC_IABT_LOW: "instruction abort, lower EL", EC_IABT_CUR: "instruction abort, same EL",
            EC_PC_ALIGN: "PC alignment fault", EC_DABT_LOW: "data abort, lower EL",
            EC_DABT_CUR: "data abort, same EL", EC_SP_ALIGN: "SP alignment fault",
            EC_BKPT_LOW: "breakpoint, lower EL", EC_BKPT_CUR: "breakpoint, same EL",
            EC_SSTEP_LOW: "software step, lower EL", EC_SSTEP_CUR: "software step, same EL",
            EC_WPT_LOW: "watchpoint, lower EL", EC_WPT_CUR: "watchpoint, same EL", EC_BRK64: "BRK"}
#: the classes that come in a "lower EL" / "same EL" pair: same-EL class -> lower-EL class
LOWER_EL_CLASSES = {EC_IABT_CUR: EC_IABT_LOW, EC_DABT_CUR: EC_DABT_LOW, EC_BKPT_CUR: EC_BKPT_LOW,
                    EC_SSTEP_CUR: EC_SSTEP_LOW, EC_WPT_CUR: EC_WPT_LOW}

# Fault status codes (DFSC/IFSC, ISS [5:0])
FSC_PERMISSION = 0x0C     # | level
FSC_SYNC_EXTERNAL = 0x10  # synchronous external abort, not on a walk
FSC_ALIGNMENT = 0x21
FSC_DEBUG = 0x22          # debug exception (breakpoint, watchpoint)

_MASK32 = 0xFFFF_FFFF


def esr(ec: int, iss: int = 0, il: bool = True) -> int:
    """ESR_ELx = EC [31:26] | IL [25] | ISS [24:0]."""
    return (ec << 26) | (int(il) << 25) | (iss & 0x1FF_FFFF)


def ec_of(value: int) -> int:
    return (value >> 26) & 0x3F


def lower(ec: int, from_lower: bool) -> int:
    """The class as taken from a lower EL (`from_lower`) or from the target EL itself."""
    return LOWER_EL_CLASSES.get(ec, ec) if from_lower else ec


def imm16(word: int | None) -> int:
    """imm16 of SVC/HVC/SMC/BRK (bits [20:5]): their ISS (EC 0x15-0x17, 0x3C)."""
    return 0 if word is None else (word >> 5) & 0xFFFF


def is_abort_class(ec: int) -> bool:
    """Aborts and alignment faults (exit status 139 when nobody handles them); everything else is 132."""
    return EC_IABT_LOW <= ec <= 0x27          # EC 0x20-0x27: instruction/data aborts, PC/SP alignment


def is_system(word: int) -> bool:
    """The system instruction class: MSR (immediate), hints, barriers, SYS/SYSL, MSR/MRS (register)."""
    return (word & 0xFFC0_0000) == 0xD500_0000


def iss_sysreg(word: int) -> int:
    """ISS of EC 0x18 for the system instruction `word` (MRS/SYSL read: Direction 1)."""
    op0, op1, crn = (word >> 19) & 3, (word >> 16) & 7, (word >> 12) & 0xF
    crm, op2, rt, read = (word >> 8) & 0xF, (word >> 5) & 7, word & 0x1F, (word >> 21) & 1
    return op0 << 20 | op2 << 17 | op1 << 14 | crn << 10 | rt << 5 | crm << 1 | read


_WFI, _WFE = 0xD503_207F, 0xD503_205F


def wfx_kind(word: int) -> int | None:
    """0 for WFI, 1 for WFE (ISS.TI), None for anything else."""
    return {_WFI: 0, _WFE: 1}.get(word)


def iss_wfx(word: int) -> int:
    """ISS of EC 0x01: CV = 1, COND = 0b1110 (A64 instructions are unconditional), TI."""
    return 1 << 24 | 0xE << 20 | (wfx_kind(word) or 0)


def is_sve(word: int) -> bool:
    """The SVE encoding group (op0 [28:25] = 0b0010, DDI 0487 C4.1 Table C4-1)."""
    return (word >> 25) & 0xF == 0b0010


def is_pauth(word: int) -> bool:
    """Pointer authentication instructions that HCR_EL2.API = 0 traps (EC 0x09): PAC*/AUT* (data-processing,
    1 source; not XPACI/XPACD), PACGA, the hint-space PAC*/AUT* (not XPACLRI), BRAA/BLRAA/RETAA/ERETAA and their
    B/Z forms, LDRAA/LDRAB (D17.2.37 "ISS encoding for an exception from a PAuth instruction")."""
    if (word & 0xFFFF_C000) == 0xDAC1_0000:                 # PACIA ... AUTDZB, XPACI, XPACD
        return (word >> 10) & 0x3F < 0x10
    if (word & 0xFFE0_FC00) == 0x9AC0_3000:                 # PACGA
        return True
    if (word & 0xFFFF_F01F) == 0xD503_201F:                 # HINT #imm
        crm, op2 = (word >> 8) & 0xF, (word >> 5) & 7
        return (crm == 1 and op2 in (0, 2, 4, 6)) or crm == 3
    if (word & 0xFE1F_F800) == 0xD61F_0800:                 # branches with pointer authentication
        return True
    return (word & 0xFF20_0400) == 0xF820_0400              # LDRAA, LDRAB


def is_load_exclusive(word: int) -> bool:
    """LDXR/LDAXR/LDXP/LDAXP (the EX bit of a software step syndrome)."""
    return (word & 0x3F40_0000) == 0x0840_0000 and not (word >> 23) & 1


def iss_data_abort(fsc: int, write: bool, *, ea: bool = False, cm: bool = False, s1ptw: bool = False,
                   template: int = 0) -> int:
    """ISS of EC 0x24/0x25; `template` carries ISV/SAS/SSE/SRT/SF/AR (`data_abort_template`)."""
    return template | int(ea) << 9 | int(cm) << 8 | int(s1ptw) << 7 | int(write) << 6 | (fsc & 0x3F)


def iss_debug(write: bool = False, cm: bool = False) -> int:
    """ISS of a breakpoint (EC 0x30/0x31: IFSC) or watchpoint (EC 0x34/0x35: CM, WnR, DFSC) exception."""
    return int(cm) << 8 | int(write) << 6 | FSC_DEBUG


def iss_swstep(isv: bool, ex: bool) -> int:
    """ISS of a software step exception (EC 0x32/0x33): ISV [24], EX [6], IFSC 0b100010."""
    return int(isv) << 24 | int(ex and isv) << 6 | FSC_DEBUG


def _template(size: int, rt: int, sf: bool, sse: bool = False, ar: bool = False) -> int:
    return 1 << 24 | size << 22 | int(sse) << 21 | rt << 16 | int(sf) << 15 | int(ar) << 14


def data_abort_template(word: int) -> int:
    """ISV/SAS/SSE/SRT/SF/AR for a single GPR load/store without writeback (0: no instruction syndrome).
    Load/store register (unsigned immediate, register offset, unscaled, unprivileged), LDR (literal) and the
    load-acquire/store-release register forms (C4.1.4 "Loads and Stores")."""
    size, rt = (word >> 30) & 3, word & 0x1F
    if (word & 0x3B00_0000) == 0x3900_0000 or (word & 0x3B20_0C00) in (0x3820_0800, 0x3800_0000, 0x3800_0800):
        if word & (1 << 26):                                     # SIMD&FP register: no syndrome
            return 0
        opc = (word >> 22) & 3
        if opc == 0:                                             # store
            return _template(size, rt, size == 3)
        if opc == 1:                                             # load, zero-extended
            return _template(size, rt, size == 3)
        if size == 3 or (size == 2 and opc == 3):                # PRFM / reserved
            return 0
        return _template(size, rt, opc == 2, sse=True)           # LDRS*: opc 2 -> 64-bit, 3 -> 32-bit
    if (word & 0x3B00_0000) == 0x1800_0000 and not word & (1 << 26):   # LDR (literal), LDRSW (literal)
        opc = (word >> 30) & 3
        return {0: _template(2, rt, False), 1: _template(3, rt, True), 2: _template(2, rt, True, sse=True)} \
            .get(opc, 0)
    if (word & 0x3F00_0000) == 0x0800_0000 and (word >> 23) & 1 and not (word >> 21) & 1:   # LDAR/STLR
        return _template(size, rt, size == 3, ar=True)
    return 0
