"""TLBI trapping: the Unicorn SYS hook, DSB barrier hooks, and vCPUs as DVM participants.

`TlbiTrap` is a machine plugin (docs/DESIGN.md "Machine plugins"). On each vCPU it adds one
`UC_HOOK_INSN`/`UC_ARM64_INS_SYS` hook; TLBIs (CRn 8, nXS CRn 9; DC/IC/AT pass through) are decoded with
`devmodel.tlbi.decode` and the issuing vCPU's state (EL from PSTATE, `vcpu.vmid`, `vcpu.hcr_fb`), then:

1. `tlbi_trap` is traced (when enabled);
2. a broadcast operation (IS/OS, or EL1 with FB=1) goes to `interconnect.tlbi`: the other vCPUs flush their
   Unicorn TLBs (`VcpuParticipant.dvm_tlbi`), SMMUs with BTM invalidate what the op hits;
3. the issuing vCPU's own Unicorn TLB: for the operations the vCPU's model implements (`unicorn_native`: the
   Armv8.0 ones on all four of Unicorn 2.1's models, derived from their ID registers and checked against Unicorn
   for every model by tests/harness/test_trap.py) the hook returns 0 and Unicorn executes the TLBI,
   flushing its own TLB and advancing the PC; for the others (OS, range, nXS, FEAT_TLBIW, RME), which re-fire
   the hook forever if it returns 1 (unicorn 2.1.4, tests/harness/test_trap.py), the trap writes PC+4, flushes the TLB
   with `UC_CTL_TLB_FLUSH` and returns 1.

DSB/DMB/ISB never reach a hook, so executable code is pre-scanned (the DSB encodings) and every DSB gets a
per-address `UC_HOOK_CODE`. A full DSB (not `...LD`/`...ST`) of the Inner/Outer Shareable or full-system
domain after broadcast TLBIs sends `interconnect.sync` (traced `dvm_sync`, plus `tlbi_dsb`); `DSB NSH`
completes local TLBIs only. An operation the current EL may not execute (op1=4 below EL2, op1=6 below EL3, any
TLBI at EL0) is an undefined instruction, as on hardware: traced `tlbi_undef`, then `machine.take_undefined`
takes it at the guest's own vector (ESR.EC 0, ELR = the TLBI) when the guest has a vector table
(harness/exceptions.py), else the guest dies with status 132 (128 + SIGILL) and the one-line death message.

Hot path (tools/benches/trap.py): the decode is memoised per vCPU by the hook's own `CpReg` tuple (EL and VMID
checked), PSTATE.EL is cached (reading it inside a hook costs ~2 us) and forgotten at every ERET (pre-scanned
like the DSBs), every `UC_HOOK_INTR` and every slice start; under the machine, the flush a broadcast asks of
another vCPU is done when that vCPU next runs (the scheduler runs one vCPU at a time, so nothing can observe
the delay); the PC is read and trace fields are built only when tracing is on. With only vCPUs as receivers, C
also counts a batch's plans (and, traced into a compact log, makes its trace records), and the receivers get
each distinct message once with its count (`_deliver_ux`, `_deliver_cx`, docs/DESIGN.md "Compact trace
records").

Not modelled yet: per-entry invalidation of Unicorn's TLB (a whole-TLB flush is architecturally allowed
over-invalidation), HCR_EL2.TTLB traps to EL2, HCR_EL2.{E2H,TGE} from the guest (settable with
`_Cpu.configure`), barriers or ERETs in code written at run time. (Undefined TLBIs reach the guest's vectors
only under the machine; standalone, `on_undefined` or a stop.)
"""
from __future__ import annotations

import ctypes
import functools
import struct
import weakref
from devmodel.record import Frozen, assign
from typing import Any, Callable, Iterable

from unicorn import UC_HOOK_CODE, UC_HOOK_INSN, UC_HOOK_INTR
from unicorn.arm64_const import UC_ARM64_INS_SYS, UC_ARM64_REG_PC, UC_ARM64_REG_PSTATE
from unicorn.unicorn_const import UC_CTL_IO_WRITE, UC_CTL_TLB_FLUSH

from devmodel.dvm import DvmSync, Interconnect
from devmodel.tlbi import BY_ENCODING, Family, Operand, TlbiDef, decode, decoder
from devmodel.tlbi_types import DecodeContext, Regime, Share, TlbiOp, UndefinedTlbi
from devmodel.trace import NULL_TRACER, PayloadGroup, Tracer, define

from . import native, observe
from .codescan import BRANCH_REGISTER, SYSTEM, words_at, words_with_top_byte
from .exits import EXIT_UNDEF

__all__ = ["TlbiTrap", "VcpuParticipant", "UNICORN_NATIVE", "unicorn_native", "scan_barriers", "scan_erets", "Barrier",
           "EXIT_UNDEFINED", "TRAP_FIELDS"]

_EL10 = Regime.EL10
EXIT_UNDEFINED = EXIT_UNDEF             # 132 = 128 + SIGILL, what a shell reports for an undefined instruction

TRAP_FIELDS = ("cpu", "pc", "el", "op", "xt", "shareability", "broadcast", "regime", "stage", "scope", "vmid",
               "asid", "addr", "leaf", "ttl", "nxs", "tg", "scale", "num", "range_bytes", "ipa_ns")
define("tlbi_trap", TRAP_FIELDS, "a TLBI executed by a vCPU, decoded (range fields only for range ops, ipa_ns "
                                 "only for IPA ops)")
define("tlbi_undef", ("cpu", "pc", "el", "op1", "crn", "crm", "op2", "reason"),
       "a TLBI not allowed at the current EL: undefined instruction, the guest dies (or takes it at its own "
       "vector table: guest_exception follows)")
define("tlbi_dsb", ("cpu", "pc", "domain", "full"),
       "a DSB executed after broadcast TLBIs of this vCPU (full = not the LD/ST-only form; with a shareable "
       "domain it sends the DVM Sync)")


def _unicorn_native(d: TlbiDef, tlb: int = 0, xs: bool = False) -> bool:
    """Does a Unicorn 2.1 CPU whose ID_AA64ISAR0_EL1.TLB is `tlb` (and ID_AA64ISAR1_EL1.XS `xs`) execute `d`
    itself? Unicorn implements the TLBIs its model's ID registers advertise: the Armv8.0 set (CRn 8), plus the
    Outer Shareable forms with TLB >= 1, the range forms with TLB = 2 and the nXS forms (CRn 9) with XS; never
    the RME (GPT) and FEAT_TLBIW (VMALLWS2E1*) ones, which its QEMU 5.0 base predates."""
    if d.family is Family.GPT or d.name.startswith("VMALLWS2E1"):
        return False
    if d.crn == 9 and not xs:
        return False
    if d.share is Share.OSH and tlb < 1:
        return False
    return tlb >= 2 or d.operand not in (Operand.RVA, Operand.RIPA, Operand.RPA)


def unicorn_native(features=None) -> frozenset[tuple[int, int, int, int]]:
    """The encodings (op1, CRn, CRm, op2) Unicorn executes natively on a CPU with `features`
    (harness.cpu.CpuFeatures; None: Unicorn's default model, the Cortex-A72)."""
    tlb, xs = (0, False) if features is None else (features.tlb, features.xs)
    return frozenset(d.key for d in BY_ENCODING.values() if _unicorn_native(d, tlb, xs))


#: encodings for which returning 1 from the SYS hook advances the PC by itself, on Unicorn's default model (the
#: Cortex-A72); machine vCPUs use `unicorn_native(vcpu.features)`, checked for every model by tests/harness
#: test_trap.py (all four of Unicorn 2.1's models advertise TLB = 0 and no XS, so the sets are equal today)
UNICORN_NATIVE: frozenset[tuple[int, int, int, int]] = unicorn_native()

# --- fast Unicorn access ----------------------------------------------------------------------------------

try:   # unicorn 2.1's ctypes library handle: calling it directly halves the cost of reg_read/ctl in hooks
    from unicorn.unicorn_py3.unicorn import uclib as _uclib
except ImportError:                                   # pragma: no cover - other unicorn packaging
    _uclib = None

_TLB_FLUSH_CODE = (UC_CTL_IO_WRITE << 30) | UC_CTL_TLB_FLUSH     # uc_ctl encoding: op<<30 | nargs<<26 | ctl


class _FastUc:
    """`read_pstate()` and `flush_tlb()` for one Unicorn instance, through the C API when available."""

    def __init__(self, uc: Any):
        if _uclib is not None:
            h = uc._uch
            buf = ctypes.c_uint64()
            ref = ctypes.byref(buf)
            rr, ctl = _uclib.uc_reg_read, _uclib.uc_ctl

            def read_pstate() -> int:
                rr(h, UC_ARM64_REG_PSTATE, ref)
                return buf.value

            def read_pc() -> int:
                rr(h, UC_ARM64_REG_PC, ref)
                return buf.value

            def flush_tlb() -> None:
                if ctl(h, _TLB_FLUSH_CODE):
                    uc.ctl(UC_CTL_TLB_FLUSH, UC_CTL_IO_WRITE)     # error path: let the binding raise UcError
        else:
            def read_pstate() -> int:
                return uc.reg_read(UC_ARM64_REG_PSTATE)

            def read_pc() -> int:
                return uc.reg_read(UC_ARM64_REG_PC)

            def flush_tlb() -> None:
                uc.ctl(UC_CTL_TLB_FLUSH, UC_CTL_IO_WRITE)
        self.read_pstate, self.read_pc, self.flush_tlb = read_pstate, read_pc, flush_tlb


# --- the native hook (harness/native/tlbi_trap.c) -----------------------------------------------------------

NATIVE_RECORDS = 4096              # records a vCPU's native buffer holds before the hook hands them to Python
_RECORDS = struct.Struct("<QQQ")   # tt_rec: pc, xt, info
_TLBI_EMULATED = 1 << 32           # record info: the hook skipped the TLBI itself (PC + 4, TLB flush)
_ALL_BITS = (1 << 64) - 1
_DOMAINS = ("OSH", "NSH", "ISH", "SY")
_DSB_OF_INFO = {(d | (f << 2) | (native.TT_DSB_SYNCS if s else 0)) << 8 | native.TT_REC_DSB: (_DOMAINS[d], bool(f), s)
                for d in range(4) for f in (0, 1) for s in (False, True)}


def _native_lib(requested: bool | None):
    """The native library for a trap: None when `requested` is False, when it is None (auto) and the library is
    not there or `SMMU_HARNESS_NATIVE=0`; `requested=True` insists (RuntimeError naming why not)."""
    if requested is False:
        return None
    lib = native.tlbi_trap()
    if lib is None and requested:
        raise RuntimeError(f"native TLBI trap unavailable: {native.status()}")
    return lib


def _encoding(op1: int, crn: int, crm: int, op2: int) -> int:
    """The hook's index of a TLBI encoding (tlbi_trap.c): (CRn & 1) << 10 | op1 << 7 | CRm << 3 | op2."""
    return ((crn & 1) << 10) | (op1 << 7) | (crm << 3) | op2


def _key_of(enc: int) -> tuple[int, int, int, int]:
    return (enc >> 7) & 7, 8 | (enc >> 10), (enc >> 3) & 15, enc & 7


@functools.lru_cache(maxsize=16)
def _classes(native_set: frozenset) -> bytes:
    """The hook's table [EL][encoding] -> TT_NATIVE / TT_EMULATED / TT_UNDEFINED: the decoder's verdict
    (whether an encoding is undefined depends only on it and the EL: `decode` refuses a TLBI below its
    `min_el`, the one check used here: 0.1 ms at start-up where decoding each encoding at each EL took 2 ms;
    tests/harness/test_trap_paths.py compares the table with `decode`) and the CPU model's native set."""
    table = bytearray([native.TT_UNDEFINED]) * (4 * native.TT_ENCODINGS)
    for el in range(4):
        for key, d in BY_ENCODING.items():
            if el < d.min_el:
                continue
            table[el * native.TT_ENCODINGS + _encoding(*key)] = (native.TT_NATIVE if key in native_set
                                                                 else native.TT_EMULATED)
    return bytes(table)


def _dsb_info(b: Barrier) -> int:
    return _DOMAINS.index(b.domain) | (int(b.full) << 2) | (native.TT_DSB_SYNCS if b.syncs else 0)


def _trap_fields(index: int, pc: int, el: int, op: TlbiOp) -> dict[str, Any]:
    """The fields of `tlbi_trap` for `op` at `pc` (range fields only for range ops, ipa_ns only for IPA ops)."""
    f = dict(cpu=index, pc=pc, el=el, op=op.name, xt=op.xt, shareability=op.shareability.value,
             broadcast=op.broadcast, regime=op.regime.value, stage=op.stage.value, scope=op.scope.value,
             vmid=op.vmid, asid=op.asid, addr=op.addr, leaf=op.leaf, ttl=op.ttl, nxs=op.nxs)
    if op.tg is not None:
        f.update(tg=op.tg, scale=op.scale, num=op.num, range_bytes=op.size)
    if op.ipa_ns is not None:
        f["ipa_ns"] = op.ipa_ns
    return f


# --- barrier pre-scan ---------------------------------------------------------------------------------------

_DSB_MASK, _DSB_BITS = 0xFFFFF0FF, 0xD503309F          # DSB <option>: CRm in bits [11:8]
_DSBNXS_MASK, _DSBNXS_BITS = 0xFFFFF3FF, 0xD503323F    # FEAT_XS DSB <option>nXS: imm2 in bits [11:10]
_DOMAIN = {0: "OSH", 1: "NSH", 2: "ISH", 3: "SY"}
# The DSB <option> names of the Arm ARM (C6.2 DSB), by CRm; CRm<1:0> == 0 is SSBB/PSSBB/DFB/reserved.
_DSB_OPTION = {1: "oshld", 2: "oshst", 3: "osh", 5: "nshld", 6: "nshst", 7: "nsh",
               9: "ishld", 10: "ishst", 11: "ish", 13: "ld", 14: "st", 15: "sy"}


class Barrier(Frozen):
    __slots__ = ("addr", "text", "domain", "full")
    addr: int
    text: str          # the assembler text, e.g. "dsb ish" (as capstone prints it)
    domain: str        # OSH / NSH / ISH / SY
    full: bool         # waits for all accesses and maintenance (not the LD/ST-only forms)

    def __init__(self, addr: int, text: str, domain: str, full: bool) -> None:
        assign(self, "addr", addr)
        assign(self, "text", text)
        assign(self, "domain", domain)
        assign(self, "full", full)

    @property
    def syncs(self) -> bool:
        """Does this DSB complete broadcast TLBIs on other PEs (send a DVM Sync)?"""
        return self.full and self.domain != "NSH"


def scan_barriers(regions: Iterable[tuple[int, bytes]]) -> list[Barrier]:
    """DSBs in executable `regions` [(address, bytes)], decoded from their encodings (no disassembler)."""
    out: list[Barrier] = []
    for base, data in regions:
        for i, w in words_at(bytes(data), SYSTEM):     # DSBs are system instructions
            if (w & _DSB_MASK) == _DSB_BITS:
                crm = (w >> 8) & 0xF
                if crm & 3 == 0:                     # SSBB / PSSBB / reserved: not a DSB
                    continue
                domain, full, text = _DOMAIN[crm >> 2], (crm & 3) == 3, f"dsb {_DSB_OPTION[crm]}"
            elif (w & _DSBNXS_MASK) == _DSBNXS_BITS:
                domain, full = _DOMAIN[(w >> 10) & 3], True
                text = f"dsb {domain.lower()}nxs"
            else:
                continue
            out.append(Barrier(base + 4 * i, text, domain, full))
    return out


_ERETS = frozenset({0xD69F03E0, 0xD69F0BFF, 0xD69F0FFF})     # ERET, ERETAA, ERETAB


def scan_erets(regions: Iterable[tuple[int, bytes]]) -> list[int]:
    """Addresses of ERET instructions (they change the EL, which the trap caches)."""
    out = []
    for base, data in regions:
        out.extend(base + 4 * i for i, w in words_with_top_byte(bytes(data), BRANCH_REGISTER) if w in _ERETS)
    return out


# --- vCPUs as DVM participants ------------------------------------------------------------------------------

class VcpuParticipant:
    """A vCPU on the DVM interconnect: a received TLBI flushes its Unicorn TLB.

    The filter is the one hardware applies by tag: an EL1&0 operation for another VMID cannot hit this vCPU's
    guest translations, so it is ignored; everything else flushes the whole (software) TLB.

    With `lazy=True` (used under the machine, whose round-robin scheduler runs one vCPU at a time and calls
    the plugin's `slice_start` before each slice) the flush is recorded and done when this vCPU next runs:
    nothing can observe the difference, and a loop of broadcasts costs one flush per slice.

    `addressless`: `dvm_tlbi` reads only the op's `vmid` and `regime` (never its address, ASID or range), so the
    native trap may hand it one op per (encoding, EL, VMID) instead of decoding every Xt (`TlbiTrap._deliver`).
    A receiver that looks at more must not say so.
    """

    addressless = True

    def __init__(self, uc: Any, index: int, vmid: Callable[[], int], lazy: bool = False,
                 name: str | None = None, vcpu: Any = None):
        self.uc = uc
        self.index = index
        self.dvm_name = name if name is not None else f"cpu{index}"
        self.vcpu = vcpu
        self._vmid = vmid
        self._flush_tlb = _FastUc(uc).flush_tlb
        self.lazy = lazy
        self.running = False          # inside this vCPU's slice: flush at once even when lazy
        self.dirty = False
        self.flushes = 0
        self.received = 0

    def flush(self) -> None:
        self._flush_tlb()
        self.dirty = False
        self.count_flush()

    def count_flush(self, n: int = 1) -> None:
        """Count `n` flushes of this vCPU's TLB (done by `flush`, or by the native TLBI hook itself)."""
        self.flushes += n
        if self.vcpu is not None:
            self.vcpu.tlb_flushes += n

    def flush_if_dirty(self) -> None:
        if self.dirty:
            self.flush()

    def dvm_tlbi(self, op: TlbiOp, msg: int) -> None:
        self.dvm_tlbi_repeat(op, 1)

    def dvm_sync(self, sync: DvmSync) -> None:
        pass                                          # synchronous model: invalidations are already done

    dvm_quiet = True                  # dvm_tlbi / dvm_sync trace nothing and read no clock (Interconnect.quiet)
    dvm_repeatable = True             # ... and ignore message numbers and order (devmodel/dvm.py)

    def dvm_tlbi_repeat(self, op: TlbiOp, n: int) -> None:
        """`n` times `dvm_tlbi(op, ...)`: the VMID filter once, one flush of Unicorn's TLB (a flush of an empty
        TLB changes nothing) counted `n` times."""
        self.received += n
        vmid = op.vmid
        if vmid is not None and op.regime is _EL10 and vmid != self._vmid():
            return
        if self.lazy and not self.running:
            self.dirty = True
        else:
            self._flush_tlb()
            self.dirty = False
            self.count_flush(n)

    def dvm_sync_repeat(self, n: int) -> None:
        pass


class _Cx:
    """A vCPU's plans in C (harness/native/tlbi_trap.c `tt_cx`) and the buffers `tt_cx_run` fills: its state
    (`native.TT_CX_*`), the compact records it makes, the (plan, count) pairs; `plans[i]` is plan i's (op or
    the DSB's (domain, full, syncs), 1 for a TLBI else 0, did the hook flush the TLB). `records=False`: the
    untraced plans of `_deliver_ux` (no record buffer)."""

    CAP = 4096                        # plans before the table starts again (as `_Cpu.plans`)

    def __init__(self, lib: Any, records: bool = True):
        self.lib, self.cap = lib, self.CAP
        self.ptr = lib.tt_cx_new(self.cap)
        if not self.ptr:
            raise MemoryError("native TLBI trap: no memory for the compact plans")
        weakref.finalize(self, lib.tt_cx_free, self.ptr)
        self.st = (ctypes.c_int64 * native.TT_CX_STATE)()
        self.out_cap = 8 * NATIVE_RECORDS if records else 1
        self.out = (ctypes.c_int64 * self.out_cap)()
        self.out_bytes = memoryview(self.out).cast("B")
        self.pairs = (ctypes.c_int64 * (2 * self.cap))()
        self.st_addr, self.out_addr = ctypes.addressof(self.st), ctypes.addressof(self.out)
        self.pairs_addr = ctypes.addressof(self.pairs)
        self.plans: list[tuple[Any, int, bool]] = []

    def clear(self) -> None:
        self.lib.tt_cx_clear(self.ptr)
        self.plans.clear()


class _Cpu:
    __slots__ = ("uc", "index", "part", "vcpu", "pending", "hcr_fb", "e2h", "tge", "cache", "traps", "el",
                 "native", "tc", "tc_ptr", "replay", "decoders", "templates", "keep", "vmid", "payloads", "plans",
                 "plans_for", "cx", "ux", "ux_for")

    def __init__(self, uc, index, part, vcpu, hcr_fb, native=UNICORN_NATIVE, vmid=lambda: 0):
        self.uc, self.index, self.part, self.vcpu, self.vmid = uc, index, part, vcpu, vmid
        self.native = native          # the TLBIs this CPU model's Unicorn executes itself
        self.pending = False          # broadcast TLBIs issued since the last syncing DSB
        self.hcr_fb = hcr_fb
        self.e2h = self.tge = False
        self.cache: dict[tuple, tuple[TlbiOp, bool, int, int]] = {}   # CpReg -> (op, Unicorn-native, EL, VMID)
        self.traps = 0
        self.el: int | None = None    # cached PSTATE.EL; None = read it at the next TLBI
        self.tc: Any = None           # the native hook's state (harness/native TtCpu), None on the Python path
        self.tc_ptr: Any = None       # ... and the pointer to it the C functions take
        self.replay: dict[tuple[int, int], tuple[TlbiOp, int]] = {}   # (record info, Xt) -> (op, VMID)
        self.decoders: dict[tuple[int, int], Any] = {}   # (record info, VMID) -> devmodel.tlbi.decoder(...)
        self.templates: dict[tuple[int, int], TlbiOp] = {}   # (record info, VMID) -> the op for Xt = 0
        self.keep: Any = None         # the native callback object (alive as long as the hook)
        self.payloads: dict[tuple, Any] = {}   # trace payloads of this vCPU's TLBIs and DSBs, by PC
        self.plans: dict[tuple, Any] = {}      # native records -> their compact trace records (_deliver_compact)
        self.plans_for: Any = None             # (log, enabled, interconnect generation) the plans hold for
        self.cx: _Cx | None = None             # the same plans in C (_deliver_cx), made at first use
        self.ux: _Cx | None = None             # untraced plans in C (_deliver_ux), made at first use
        self.ux_for: Any = None                # the interconnect generation they hold for

    def configure(self, hcr_fb: bool | None = None, e2h: bool | None = None, tge: bool | None = None) -> None:
        """Change the HCR_EL2 bits the decoder sees (drops the decode cache)."""
        if hcr_fb is not None:
            self.hcr_fb = hcr_fb
        if e2h is not None:
            self.e2h = e2h
        if tge is not None:
            self.tge = tge
        self.cache.clear()
        self.replay.clear()
        self.decoders.clear()
        self.templates.clear()
        self.plans_for = None                     # the compact plans hold decoded ops too (_deliver_compact)
        self.ux_for = None                        # ... and the untraced ones (_deliver_ux)


class TlbiTrap:
    """Machine plugin: TLBI SYS hook + DSB hooks on every vCPU.

    Standalone use (tests, benchmarks): `add_cpu(uc, index, vmid=lambda: 5)` then `install_barriers(...)`.
    `on_undefined(cpu_index, pc, reason)` is called when the guest executes a TLBI it may not; the default
    asks the machine (or vCPU) to stop with status 132, and stops that Unicorn.
    """

    def __init__(self, interconnect: Interconnect | None = None, tracer: Tracer | None = None,
                 hcr_fb: bool = True, on_undefined: Callable[[int, int, str], None] | None = None,
                 lazy: bool = False, native_hook: bool | None = None):
        self.native_lib = _native_lib(native_hook)
        self._adopt = interconnect is None          # take the machine's interconnect/tracer on first attach
        self.interconnect = interconnect if interconnect is not None else Interconnect(tracer or NULL_TRACER)
        self.tracer = tracer if tracer is not None else self.interconnect.tracer
        self.hcr_fb = hcr_fb
        self.on_undefined = on_undefined
        self.lazy = lazy
        self.cpus: list[_Cpu] = []
        self.where_now: tuple[int, int] | None = None
        self.exit_status: int | None = None
        self.undefined: list[tuple[int, int, str]] = []
        self.barriers: list[Barrier] = []
        self._machine: Any = None
        self._by_uc: dict[int, _Cpu] = {}
        self._scanned: set[tuple[int, int, int]] = set()

    @property
    def traps(self) -> int:
        return sum(c.traps for c in self.cpus)

    @property
    def native_hook(self) -> bool:
        """Do the vCPUs trap TLBIs in native code (records delivered in batches)?"""
        return any(c.tc is not None for c in self.cpus) or (not self.cpus and self.native_lib is not None)

    # -- trace context for sinks (cpu, pc of the instruction being handled) --
    def where(self) -> tuple[int, int] | None:
        return self.where_now

    # -- setup --
    def add_cpu(self, uc: Any, index: int, vmid: Callable[[], int] = lambda: 0, hcr_fb: bool | None = None,
                vcpu: Any = None, name: str | None = None, lazy: bool | None = None,
                native: frozenset | None = None) -> VcpuParticipant:
        """Trap the TLBIs of `uc`; `native`: the encodings its model executes itself (default: the A72's)."""
        part = VcpuParticipant(uc, index, vmid, lazy=self.lazy if lazy is None else lazy, name=name, vcpu=vcpu)
        cpu = _Cpu(uc, index, part, vcpu, self.hcr_fb if hcr_fb is None else hcr_fb,
                   UNICORN_NATIVE if native is None else native, vmid)
        self.cpus.append(cpu)
        self._by_uc[id(uc)] = cpu
        self.interconnect.attach(part)
        if self.native_lib is None or not self._attach_native(cpu):
            observe.raw_hook_add(uc, UC_HOOK_INSN, self._make_sys_hook(cpu, vmid), None, 1, 0, UC_ARM64_INS_SYS)
        return part

    def cpu(self, index: int) -> _Cpu:
        for c in self.cpus:
            if c.index == index:
                return c
        raise KeyError(f"no vCPU {index} attached to the TLBI trap")

    def install_barriers(self, regions: Iterable[tuple[int, bytes]], cpus: Iterable[int] | None = None
                         ) -> list[Barrier]:
        """Pre-scan executable `regions` [(address, bytes)] and hook, on the given vCPUs (default: all),
        every DSB (DVM Sync) and, on the Python path, every ERET (the EL the trap caches changes there)."""
        regions = [(a, bytes(d)) for a, d in regions]
        found = scan_barriers(regions)
        erets = scan_erets(regions)
        wanted = None if cpus is None else set(cpus)
        for c in self.cpus:
            if wanted is not None and c.index not in wanted:
                continue
            if c.tc is not None:                  # native: DSBs recorded in C; the hook reads PSTATE itself
                self._native_barriers(c, found)
                continue
            for b in found:
                observe.raw_hook_add(c.uc, UC_HOOK_CODE, self._make_dsb_hook(c, b), None, b.addr, b.addr)
            for a in erets:
                observe.raw_hook_add(c.uc, UC_HOOK_CODE, self._make_el_hook(c), None, a, a)
            c.el = None
        self.barriers.extend(found)
        return found

    def _native_barriers(self, c: _Cpu, found: list[Barrier]) -> None:
        for b in found:
            if self.native_lib.tt_add_dsb(c.tc_ptr, b.addr, _dsb_info(b)) != 0:
                raise MemoryError(f"native TLBI trap: no hook for the DSB at {b.addr:#x}")

    def counted_mode(self, vcpu: Any, counted: bool) -> bool:
        """The scheduler switches `vcpu` between counted and uncounted runs (and flushes its translations
        after this): in counted runs the native DSB sites share one hook (harness/native/tlbi_trap.c
        `tt_ranged`: Unicorn's count hook makes every instruction walk the code-hook list). True: changed."""
        c = self._by_uc.get(id(getattr(vcpu, "uc", vcpu)))
        if c is None or c.tc is None or bool(c.tc.ranged) == counted:
            return False
        if self.native_lib.tt_ranged(c.tc_ptr, 1 if counted else 0) != 0:
            raise MemoryError("native TLBI trap: no hook for the DSB sites")
        return True

    # -- machine plugin protocol --
    def attach_vcpu(self, vcpu: Any) -> None:
        """A machine `Vcpu` (harness.machine): trace `cpu` = `vcpu.id` (machine-wide), DVM name
        `vcpu.dvm_name`, VMID `vcpu.vmid` and `vcpu.hcr_fb` read live. Flushes of other vCPUs are lazy:
        done at their next `slice_start`."""
        self._machine = getattr(vcpu, "machine", self._machine)
        if self._adopt and not self.cpus and self._machine is not None:
            self.interconnect = self._machine.interconnect
            self.tracer = self._machine.tracer
        self._adopt = False
        feat = getattr(vcpu, "features", None)
        self.add_cpu(vcpu.uc, vcpu.id, lambda v=vcpu: v.vmid, hcr_fb=vcpu.hcr_fb, vcpu=vcpu,
                     name=vcpu.dvm_name, lazy=True, native=unicorn_native(feat) if feat is not None else None)
        cpu = self.cpus[-1]
        if cpu.tc is not None:
            return                                # the native hook reads PSTATE.EL at every TLBI

        def on_intr(uc, intno, _user):            # the machine may emulate an exception entry: EL unknown
            cpu.el = None

        observe.raw_hook_add(vcpu.uc, UC_HOOK_INTR, on_intr)

    def before_run(self, machine: Any) -> None:
        """Pre-scan each VM's executable ranges (`vm.code_ranges`) and hook them on that VM's vCPUs."""
        self._machine = machine
        for vm in getattr(machine, "vms", ()):
            ids = [v.id for v in vm.vcpus]
            todo = []
            for r in vm.code_ranges:
                key = (id(vm), r.vaddr, len(r.data))
                if key not in self._scanned:
                    self._scanned.add(key)
                    todo.append((r.vaddr, r.data))
            if todo:
                self.install_barriers(todo, ids)

    def slice_start(self, vcpu: Any) -> None:
        c = self._by_uc.get(id(getattr(vcpu, "uc", vcpu)))
        if c is not None:
            c.el = None
            c.part.running = True
            c.part.flush_if_dirty()
            v = c.vcpu
            if v is not None and v.hcr_fb != c.hcr_fb:
                c.configure(hcr_fb=v.hcr_fb)

    def slice_end(self, vcpu: Any) -> None:
        c = self._by_uc.get(id(getattr(vcpu, "uc", vcpu)))
        if c is not None:
            if c.tc is not None:
                self._deliver(c)                  # done when emu_start returned (harness/observe.py); a no-op
            c.part.running = False

    def after_run(self, machine: Any) -> None:
        self.deliver()

    def deliver(self) -> None:
        """Deliver every record the native hooks hold (they are delivered at every observation point by
        themselves: this is for code that runs a vCPU's Unicorn without `harness.observe`)."""
        for c in self.cpus:
            if c.tc is not None:
                self._deliver(c)

    def cpu_name(self, index: int) -> str:
        """DVM name of vCPU `index` (for trace sinks' track names)."""
        return self.cpu(index).part.dvm_name

    # -- hot paths --
    def _make_sys_hook(self, cpu: _Cpu, vmid: Callable[[], int]):
        cache = cpu.cache
        native_set = cpu.native
        tracer = self.tracer
        tlbi = self.interconnect.tlbi
        part = cpu.part
        index = cpu.index
        fast = _FastUc(cpu.uc)
        read_pstate, read_pc = fast.read_pstate, fast.read_pc
        flush = part.flush                        # counts; only on the path Unicorn does not flush itself
        reg_write = cpu.uc.reg_write
        PC = UC_ARM64_REG_PC

        def on_sys(uc, reg, cp, _user):
            # cp is unicorn's CpReg named tuple (crn, crm, op0, op1, op2, val): hashable, so it keys the cache
            crn = cp[0]
            if crn != 8 and crn != 9:
                return 0                          # DC / IC / AT: Unicorn executes them
            el = cpu.el
            if el is None:                        # reading PSTATE inside a hook costs ~2 us: cache the EL
                el = cpu.el = (read_pstate() >> 2) & 3
            vm = vmid()
            hit = cache.get(cp)                   # keyed by the CpReg tuple itself: no allocation here
            if hit is None or hit[2] != el or hit[3] != vm:
                key = (cp.op1, crn, cp.crm, cp.op2)
                ctx = DecodeContext(el=el, vmid=vm, hcr_fb=cpu.hcr_fb, e2h=cpu.e2h, tge=cpu.tge)
                try:
                    op = decode(key[0], crn, key[2], key[3], cp.val, ctx)
                except UndefinedTlbi as e:
                    return self._undefined(cpu, read_pc(), el, key, str(e))
                if len(cache) > 4096:
                    cache.clear()
                hit = cache[cp] = (op, key in native_set, el, vm)
            op = hit[0]
            cpu.traps += 1
            if tracer.enabled:
                slow(op, el)
            elif op.broadcast:
                tlbi(op, part)
                cpu.pending = True
            if hit[1]:
                return 0                          # Unicorn executes it: advances the PC, flushes its own TLB
            reg_write(PC, read_pc() + 4)          # not implemented by Unicorn: skip it ourselves
            flush()
            return 1

        def slow(op: TlbiOp, el: int) -> None:
            self._traced_tlbi(cpu, read_pc(), el, op)

        return on_sys

    def _traced_tlbi(self, cpu: _Cpu, pc: int, el: int, op: TlbiOp) -> None:
        """A TLBI with tracing on: the same steps, with the trap event and the (cpu, pc) context for sinks."""
        tr, ic = self.tracer, self.interconnect
        key = (pc, el, id(op))
        hit = cpu.payloads.get(key)
        if hit is None or hit[0] is not op or hit[1] is not tr.enabled or hit[2] != ic.generation:
            if len(cpu.payloads) > 4096:
                cpu.payloads.clear()
            hit = cpu.payloads[key] = self._tlbi_plan(cpu, pc, el, op)
        group = hit[4]
        if group is not None:                     # the trap and its messages in one go (no receiver traces)
            self.where_now = (cpu.index, pc)
            try:
                m = ic.msgs + 1
                tr.emit_group(group, *range(m, m + hit[5]))
                ic.tlbi(op, cpu.part, trace=False)
            finally:
                self.where_now = None
            cpu.pending = True
            return
        if hit[3] is not None:
            tr.emit_payload(hit[3])
        if op.broadcast:
            self.where_now = (cpu.index, pc)
            try:
                ic.tlbi(op, cpu.part)
            finally:
                self.where_now = None
            cpu.pending = True

    def _tlbi_plan(self, cpu: _Cpu, pc: int, el: int, op: TlbiOp) -> tuple:
        """How a TLBI is traced: (op, tracer.enabled, interconnect generation it holds for, the tlbi_trap
        payload or None, a group of it and the dvm_tlbi payloads or None, the number of those)."""
        tr, ic = self.tracer, self.interconnect
        trap = tr.payload("tlbi_trap", **_trap_fields(cpu.index, pc, el, op)) if "tlbi_trap" in tr.enabled else None
        group, n = None, 0
        if op.broadcast and ic.quiet(cpu.part):
            dvm = ic.tlbi_payloads(op, cpu.part) if "dvm_tlbi" in tr.enabled else []
            members = ([trap] if trap is not None else []) + dvm
            group, n = (PayloadGroup(members) if members else None), len(dvm)
        return op, tr.enabled, ic.generation, trap, group, n

    def _traced_dsb(self, cpu: _Cpu, pc: int, domain: str, full: bool, syncs: bool) -> None:
        """A DSB after broadcast TLBIs with tracing on (the DVM Sync when `syncs`)."""
        tr, ic = self.tracer, self.interconnect
        key = (pc, domain, full)
        hit = cpu.payloads.get(key)
        if hit is None or hit[0] is not tr.enabled or hit[1] != ic.generation:
            if len(cpu.payloads) > 4096:
                cpu.payloads.clear()
            hit = cpu.payloads[key] = self._dsb_plan(cpu, pc, domain, full, syncs)
        if syncs:
            cpu.pending = False
        group = hit[3]
        if group is not None and syncs:           # the DSB and its Sync in one go (no receiver traces)
            self.where_now = (cpu.index, pc)
            try:
                tr.emit_group(group, *((ic.msgs + 1,) if hit[4] else ()))
                ic.sync(cpu.part, trace=False)
            finally:
                self.where_now = None
            return
        if hit[2] is not None:
            tr.emit_payload(hit[2])
        if syncs:
            self.where_now = (cpu.index, pc)
            try:
                ic.sync(cpu.part)
            finally:
                self.where_now = None

    def _dsb_plan(self, cpu: _Cpu, pc: int, domain: str, full: bool, syncs: bool) -> tuple:
        """(tracer.enabled, interconnect generation, the tlbi_dsb payload or None, a group of it and the
        dvm_sync payload or None, whether the group has the dvm_sync)."""
        tr, ic = self.tracer, self.interconnect
        dsb = (tr.payload("tlbi_dsb", cpu=cpu.index, pc=pc, domain=domain, full=full)
               if "tlbi_dsb" in tr.enabled else None)
        group, sync = None, False
        if syncs and ic.quiet(cpu.part):
            sync = "dvm_sync" in tr.enabled
            members = ([dsb] if dsb is not None else []) + ([ic.sync_payload(cpu.part)] if sync else [])
            group = PayloadGroup(members) if members else None
        return tr.enabled, ic.generation, dsb, group, sync

    # -- the native path: records made in C, delivered here in order at observation points --
    def _attach_native(self, cpu: _Cpu) -> bool:
        """Install the C hook on `cpu` (False: the library refused; the Python hook is used instead)."""
        lib = self.native_lib

        def callback(_tc: Any, why: int) -> int:
            try:
                obs.sync()                        # observation point: clock back, older console bytes, records
                if why == native.TT_WHY_UNDEFINED:
                    return self._native_undefined(cpu)
                return 0
            except BaseException as e:            # nothing may propagate into Unicorn: emu_start raises it
                observe.fail(cpu.uc, e)
                return 1

        keep = native.CALLBACK(callback)
        ptr = lib.tt_new(cpu.uc._uch, NATIVE_RECORDS, keep)
        if not ptr:
            return False
        cpu.tc, cpu.tc_ptr, cpu.keep = ptr.contents, ptr, keep
        ctypes.memmove(cpu.tc.cls, _classes(cpu.native), 4 * native.TT_ENCODINGS)
        weakref.finalize(cpu.uc, lib.tt_free, ctypes.cast(ptr, ctypes.c_void_p).value)   # memory only
        tc = cpu.tc
        obs = observe.install(cpu.uc, force=True)

        def deliver_if_any() -> None:
            if tc.n:
                self._deliver(cpu)

        obs.add(deliver_if_any)
        return True

    def _deliver(self, cpu: _Cpu) -> None:
        """Decode and deliver `cpu`'s records in the order the guest executed them: what the Python hooks do
        at each TLBI and DSB, with each record's own PC and EL."""
        tc = cpu.tc
        n = tc.n
        if not n:
            return
        data = ctypes.string_at(tc.buf, n * native.RECORD_SIZE)
        tc.n = 0
        vm = cpu.vmid()
        traced = bool(self.tracer.enabled)
        if traced and self.tracer.compact is not None and self.tracer.clock is not None:
            return self._deliver_compact(cpu, data, vm)
        part = cpu.part
        if not traced and vm.__class__ is int and self.interconnect.receivers_say(part, "dvm_repeatable"):
            return self._deliver_ux(cpu, data, vm)
        replay = cpu.replay
        tlbi, sync = self.interconnect.tlbi, self.interconnect.sync
        # untraced, with receivers that read only VMID and regime: one op per (encoding, EL, VMID) will do
        addressless = not traced and self.interconnect.receivers_say(part, "addressless")
        templates = cpu.templates
        for pc, xt, info in _RECORDS.iter_unpack(data):
            if info & 0xFF == native.TT_REC_TLBI:
                if addressless:
                    op = templates.get((info, vm))
                    if op is None:
                        if len(templates) > 256:
                            templates.clear()
                        op = templates[(info, vm)] = self._replay_decode(cpu, info, 0, vm)
                else:
                    hit = replay.get((info, xt))
                    if hit is None or hit[1] != vm:
                        hit = replay[(info, xt)] = (self._replay_decode(cpu, info, xt, vm), vm)
                        if len(replay) > 4096:
                            replay.clear()
                    op = hit[0]
                cpu.traps += 1
                if traced:
                    self._traced_tlbi(cpu, pc, (info >> 8) & 3, op)
                elif op.broadcast:
                    tlbi(op, part)
                    cpu.pending = True
                if info & _TLBI_EMULATED:
                    part.count_flush()            # the hook flushed the TLB itself
            elif cpu.pending:                     # a DSB (recorded only after a TLBI)
                domain, full, syncs = _DSB_OF_INFO[info]
                if traced:
                    self._traced_dsb(cpu, pc, domain, full, syncs)
                elif syncs:
                    cpu.pending = False
                    sync(part)

    def _deliver_compact(self, cpu: _Cpu, data: bytes, vm: int) -> None:
        """`_deliver` while the trace goes to a compact log (devmodel/trace.py): a TLBI and its DVM messages,
        a DSB and its Sync, are one compact record each (a `PayloadGroup`, when no receiver traces anything:
        `Interconnect.quiet`); anything else takes the traced steps of the Python hooks. Plans are keyed by
        the raw record. When every receiver is also `dvm_repeatable`, C makes the records (`_deliver_cx`)."""
        tr, ic = self.tracer, self.interconnect
        now = (tr.compact, tr.enabled, ic.generation)
        if cpu.plans_for is None or any(a is not b for a, b in zip(cpu.plans_for, now)):
            cpu.plans.clear()
            if cpu.cx is not None:
                cpu.cx.clear()
            cpu.plans_for = now
        at = 0
        if vm.__class__ is int and ic.quiet(cpu.part) and ic.receivers_say(cpu.part, "dvm_repeatable"):
            at = self._deliver_cx(cpu, data, vm)
        if at * native.RECORD_SIZE < len(data):
            self._compact_loop(cpu, data, vm, at * native.RECORD_SIZE)

    def _compact_loop(self, cpu: _Cpu, data: bytes, vm: int, start: int) -> None:
        """`_deliver_compact` in Python, record by record from byte offset `start`. The clock is read again
        only after the traced steps (a quiet receiver does not move it)."""
        tr, ic, part = self.tracer, self.interconnect, cpu.part
        log = tr.compact
        plans, out, clock, size = cpu.plans, log.data, tr.clock, native.RECORD_SIZE
        get, ext, tlbi_to, sync_to = plans.get, out.extend, ic.tlbi, ic.sync
        ts = clock()
        seq, pending, traps = tr.seq, cpu.pending, 0      # kept here, written back before any other code reads them
        try:
            for at in range(start, len(data), size):
                raw = data[at:at + size]
                plan = get(raw)
                if plan is None or plan[1] != vm:
                    if len(plans) > 4096:
                        plans.clear()
                    plan = plans[raw] = self._compact_plan(cpu, raw, vm)
                what, _vm, gid, n, msgs, tlbi, emulated = plan
                if tlbi:
                    traps += 1
                elif not pending:
                    continue                      # a DSB with no TLBI before it: completes nothing
                if gid is None or ts.__class__ is not int:
                    tr.seq, cpu.pending = seq, pending
                    self._traced_record(cpu, raw, what)
                    seq, pending, ts = tr.seq, cpu.pending, clock()
                else:
                    m = ic.msgs + 1
                    if n == 2 and msgs == 1:      # the usual shape: one member more, one message
                        ext((gid, seq + 1, ts, seq + 2, m))
                    else:
                        ext((gid, seq + 1, ts, *range(seq + 2, seq + n + 1), *range(m, m + msgs)))
                    seq += n
                    if tlbi:
                        tlbi_to(what, part, False)
                    else:
                        sync_to(part, False)
                    pending = tlbi
                if emulated:
                    part.count_flush()            # the hook flushed the TLB itself (a TLBI Unicorn lacks)
                if len(out) > log.limit:
                    log.drain()
        finally:
            tr.seq, cpu.pending = seq, pending
            cpu.traps += traps

    def _deliver_cx(self, cpu: _Cpu, data: bytes, vm: int) -> int:
        """The records of `data` made by C (harness/native/tlbi_trap.c `tt_cx_run`) from the plans, handed to
        the receivers once per plan and batch (`Interconnect.tlbi_repeat`/`sync_repeat`); a record whose plan
        says Python traces it goes through the traced steps in between, in order. Returns the index of the
        record the Python loop continues at (the clock gave a time that is not an int)."""
        cx = cpu.cx if cpu.cx is not None else self._new_cx(cpu)
        tr, st, n, at = self.tracer, cx.st, len(data) // native.RECORD_SIZE, 0
        st[native.TT_CX_VM] = vm
        while at < n:
            ts = tr.clock()
            if ts.__class__ is not int:
                return at
            st[native.TT_CX_SEQ], st[native.TT_CX_MSGS], st[native.TT_CX_TS] = tr.seq, self.interconnect.msgs, ts
            st[native.TT_CX_PENDING], st[native.TT_CX_TRAPS], st[native.TT_CX_OUT] = cpu.pending, 0, 0
            at = self.native_lib.tt_cx_run(cx.ptr, data, n, at, cx.st_addr, cx.out_addr, cx.out_cap)
            self._cx_hand_over(cpu, cx)
            why = st[native.TT_CX_WHY]
            if why == native.TT_CX_UNKNOWN:
                self._cx_plan(cpu, cx, data[at * native.RECORD_SIZE:(at + 1) * native.RECORD_SIZE], vm)
            elif why == native.TT_CX_PYTHON:
                raw = data[at * native.RECORD_SIZE:(at + 1) * native.RECORD_SIZE]
                what, _kind, emulated = cx.plans[st[native.TT_CX_PLAN]]
                cpu.traps += raw[16] == native.TT_REC_TLBI        # info's low byte: the record kind
                self._traced_record(cpu, raw, what)
                if emulated:
                    cpu.part.count_flush()
                at += 1
        return n

    def _cx_hand_over(self, cpu: _Cpu, cx: "_Cx") -> None:
        """After `tt_cx_run`: the state back, its records into the log (first: kept if a receiver raises),
        then each plan's count to the receivers."""
        st, tr = cx.st, self.tracer
        tr.seq, cpu.pending = st[native.TT_CX_SEQ], bool(st[native.TT_CX_PENDING])
        cpu.traps += st[native.TT_CX_TRAPS]
        used = st[native.TT_CX_OUT]
        if used:
            tr.compact.add_packed(cx.out_bytes[:used * 8])
        self._cx_counts(cpu, cx)

    def _cx_counts(self, cpu: _Cpu, cx: "_Cx") -> None:
        """Each plan's count since the last call to the receivers at once (`tlbi_repeat`, `sync_repeat`)."""
        ic, part = self.interconnect, cpu.part
        k = self.native_lib.tt_cx_counts(cx.ptr, cx.pairs_addr, cx.cap)
        pairs, plans = cx.pairs, cx.plans
        for i in range(0, 2 * k, 2):
            what, kind, emulated = plans[pairs[i]]
            count = pairs[i + 1]
            if kind == 1:
                ic.tlbi_repeat(what, part, count)
            elif kind == 2:
                ic.sync_repeat(part, count)
            if emulated:
                part.count_flush(count)       # the hook flushed the TLB itself (a TLBI Unicorn lacks)

    def _cx_plan(self, cpu: _Cpu, cx: "_Cx", raw: bytes, vm: int) -> None:
        """The C plan of record `raw`: the records the traced steps emit for it, as one group (with quiet
        receivers they are contiguous: `_tlbi_plan`, `_dsb_plan`; a local TLBI or a DSB that sends no Sync
        emits its own event alone), the messages it sends, how it moves `pending`. Python's traced steps take
        it when the log cannot hold the group."""
        pc, xt, info = _RECORDS.unpack(raw)
        what, sends, flags = self._record_plan(cpu, info, xt, vm)
        if flags & native.TT_PLAN_TLBI:
            _op, _en, _gen, alone, group, nmsg = self._tlbi_plan(cpu, pc, (info >> 8) & 3, what)
            adv = sum(p is not cpu.part for p in self.interconnect.participants) if sends else 0
        else:
            _en, _gen, alone, group, nmsg = self._dsb_plan(cpu, pc, *what)
            adv = 1 if sends else 0
        if not sends:
            group, nmsg = (PayloadGroup([alone]) if alone is not None else None), 0
        gid = -1                                  # nothing of it is traced
        if group is not None:
            self.where_now = (cpu.index, pc)
            try:
                got = self.tracer.compact_id(group)
            finally:
                self.where_now = None
            gid, flags = (-1, flags | native.TT_PLAN_PYTHON) if got is None else (got, flags)
        nseq = len(group.members) if group is not None else 0
        self._add_plan(cx, (pc, xt, info, gid, vm, nseq, int(nmsg), adv, flags), what, sends)

    def _deliver_ux(self, cpu: _Cpu, data: bytes, vm: int) -> None:
        """`_deliver` untraced, with every receiver `dvm_repeatable`: C (`tt_cx_tally`) counts each plan of a
        batch - one per (Xt, record info), or per record info alone when the receivers are also `addressless`
        (as the loop's `templates`) - and moves `pending` and the trap count; Python hands each count to the
        receivers at once (`_cx_counts`): the counters, flushes and message numbers of the calls one by one."""
        ux = cpu.ux
        if ux is None:
            ux = cpu.ux = _Cx(self.native_lib, records=False)
        ic, lib, size = self.interconnect, self.native_lib, native.RECORD_SIZE
        if cpu.ux_for != ic.generation:
            ux.clear()
            cpu.ux_for = ic.generation
        xt_mask = 0 if ic.receivers_say(cpu.part, "addressless") else _ALL_BITS
        st, n, at = ux.st, len(data) // size, 0
        st[native.TT_CX_VM] = vm
        while at < n:
            st[native.TT_CX_PENDING], st[native.TT_CX_TRAPS] = cpu.pending, 0
            at = lib.tt_cx_tally(ux.ptr, data, n, at, ux.st_addr, 0, xt_mask)
            cpu.pending = bool(st[native.TT_CX_PENDING])
            cpu.traps += st[native.TT_CX_TRAPS]
            self._cx_counts(cpu, ux)
            if st[native.TT_CX_WHY] == native.TT_CX_UNKNOWN:
                self._ux_plan(cpu, ux, data[at * size:(at + 1) * size], vm, xt_mask)

    def _ux_plan(self, cpu: _Cpu, ux: "_Cx", raw: bytes, vm: int, xt_mask: int) -> None:
        """The untraced plan of record `raw` (keyed with PC 0 and `Xt & xt_mask`): what it sends, how it moves
        `pending`."""
        _pc, xt, info = _RECORDS.unpack(raw)
        xt &= xt_mask
        what, sends, flags = self._record_plan(cpu, info, xt, vm)
        self._add_plan(ux, (0, xt, info, -1, vm, 0, 0, 0, flags), what, sends)

    def _record_plan(self, cpu: _Cpu, info: int, xt: int, vm: int) -> tuple[Any, bool, int]:
        """What a trap record does, for both plan tables: (the TLBI's op or the DSB's (domain, full, syncs), does
        it send a message, its plan flags TLBI / SETS (a broadcast TLBI makes a DSB pending) / CLEARS)."""
        if info & 0xFF == native.TT_REC_TLBI:
            op = self._replay_decode(cpu, info, xt, vm)
            return op, op.broadcast, native.TT_PLAN_TLBI | (native.TT_PLAN_SETS if op.broadcast else 0)
        dsb = _DSB_OF_INFO[info]
        return dsb, dsb[2], native.TT_PLAN_CLEARS if dsb[2] else 0

    def _add_plan(self, cx: "_Cx", args: tuple, what: Any, sends: bool) -> None:
        """Add the plan `args` (tt_cx_add's: pc, xt, info, gid, vm, nseq, nmsg, adv, flags) to `cx`'s C table and
        its Python side: (op or DSB, 1 TLBI / 2 DSB sent / 0 nothing sent, did the hook flush the TLB)."""
        idx = self.native_lib.tt_cx_add(cx.ptr, *args)
        if idx < 0:                               # the table is full (its counts were handed over)
            cx.clear()
            idx = self.native_lib.tt_cx_add(cx.ptr, *args)
            if idx < 0:
                raise MemoryError("native TLBI trap: an empty plan table refused a plan")
        info, flags = args[2], args[8]
        kind = (1 if flags & native.TT_PLAN_TLBI else 2) if sends else 0
        cx.plans[idx:idx + 1] = [(what, kind, bool(info & _TLBI_EMULATED))]     # appended, or replaced (VMID)

    def _new_cx(self, cpu: _Cpu) -> "_Cx":
        cpu.cx = _Cx(self.native_lib)
        return cpu.cx

    def _compact_plan(self, cpu: _Cpu, raw: bytes, vm: int) -> tuple:
        """(op or the DSB's (domain, full, syncs), VMID, the compact template number of its group or None,
        the group's records, how many message numbers it takes, is it a TLBI, did the hook flush the TLB)."""
        pc, xt, info = _RECORDS.unpack(raw)
        tlbi = info & 0xFF == native.TT_REC_TLBI
        if tlbi:
            op = self._replay_decode(cpu, info, xt, vm)
            hit = self._tlbi_plan(cpu, pc, (info >> 8) & 3, op)
            what, group, msgs = op, hit[4], hit[5]
        else:
            what = _DSB_OF_INFO[info]
            hit = self._dsb_plan(cpu, pc, *what)
            group, msgs = hit[3], int(hit[4])
        gid = None
        if group is not None:
            self.where_now = (cpu.index, pc)
            try:
                gid = self.tracer.compact_id(group)
            finally:
                self.where_now = None
        return what, vm, gid, len(group.members) if group else 0, msgs, tlbi, bool(info & _TLBI_EMULATED)

    def _traced_record(self, cpu: _Cpu, raw: bytes, what: Any) -> None:
        """One native record through the traced steps of the Python hooks."""
        pc, _xt, info = _RECORDS.unpack(raw)
        if info & 0xFF == native.TT_REC_TLBI:
            self._traced_tlbi(cpu, pc, (info >> 8) & 3, what)
        else:
            self._traced_dsb(cpu, pc, *what)

    def _replay_decode(self, cpu: _Cpu, info: int, xt: int, vm: int) -> TlbiOp:
        """The record's op: `decode`, through one `decoder` per (encoding, EL, VMID) - a guest's TLBIs come
        with ever new addresses (kvm-unit-tests' MMU set-up: one per page), so the (info, Xt) cache misses."""
        of = cpu.decoders.get((info, vm))
        if of is None:
            el = (info >> 8) & 3
            op1, crn, crm, op2 = _key_of((info >> 16) & 0xFFFF)
            ctx = DecodeContext(el=el, vmid=vm, hcr_fb=cpu.hcr_fb, e2h=cpu.e2h, tge=cpu.tge)
            of = decoder(op1, crn, crm, op2, ctx)             # the hook hands undefined ones over at once
            if len(cpu.decoders) > 256:
                cpu.decoders.clear()
            cpu.decoders[(info, vm)] = of
        return of(xt)

    def _native_undefined(self, cpu: _Cpu) -> int:
        """The hook met a TLBI undefined at the current EL (the records before it are delivered)."""
        u = cpu.tc.undefined
        el = (u.info >> 8) & 3
        key = _key_of((u.info >> 16) & 0xFFFF)
        try:
            decode(*key, u.xt, DecodeContext(el=el, vmid=cpu.vmid(), hcr_fb=cpu.hcr_fb, e2h=cpu.e2h, tge=cpu.tge))
        except UndefinedTlbi as e:
            return self._undefined(cpu, u.pc, el, key, str(e))
        raise AssertionError(f"native TLBI trap: {key} at EL{el} classified undefined but decodes")

    def _make_dsb_hook(self, cpu: _Cpu, b: Barrier):
        sync = self.interconnect.sync
        tracer = self.tracer
        part = cpu.part
        domain, full, syncs = b.domain, b.full, b.syncs

        def slow(addr: int) -> None:
            self._traced_dsb(cpu, addr, domain, full, syncs)

        if b.syncs:
            def on_dsb(uc, addr, size, _user):
                if cpu.pending:
                    if tracer.enabled:
                        slow(addr)
                    else:
                        cpu.pending = False
                        sync(part)
        else:
            def on_dsb(uc, addr, size, _user):        # DSB NSH / LD / ST: completes nothing remote
                if cpu.pending and tracer.enabled:
                    slow(addr)

        return on_dsb

    @staticmethod
    def _make_el_hook(cpu: _Cpu):
        def on_eret(uc, addr, size, _user):
            cpu.el = None

        return on_eret

    def _undefined(self, cpu: _Cpu, pc: int, el: int, key: tuple[int, int, int, int], reason: str) -> int:
        op1, crn, crm, op2 = key
        if "tlbi_undef" in self.tracer.enabled:
            self.tracer.emit("tlbi_undef", cpu=cpu.index, pc=pc, el=el, op1=op1, crn=crn, crm=crm, op2=op2,
                             reason=reason)
        self.undefined.append((cpu.index, pc, reason))
        if self.on_undefined is None and self._stop_guest(cpu, pc, reason):
            cpu.el = None                         # taken at the guest's vector: PC is there, Unicorn resumes
            return 1
        self.exit_status = EXIT_UNDEFINED
        if self.on_undefined is not None:
            self.on_undefined(cpu.index, pc, reason)
        cpu.uc.emu_stop()
        return 1                                  # PC stays on the TLBI; emulation stops before it re-fires

    def _stop_guest(self, cpu: _Cpu, pc: int, reason: str) -> bool:
        """Under the machine: the guest's vector if it has one (True), else the death line (exit 132)."""
        if cpu.vcpu is not None and self._machine is not None:
            return self._machine.take_undefined(cpu.vcpu, pc, reason) is None
        return False
