"""The CPU models a vCPU can be, their features, and the state QEMU's `-kernel` boot leaves them in.

* Models (`CPU_MODELS`): Unicorn 2.1's `UC_CPU_ARM64_A53`, `_A57`, `_A72` and `_MAX`, chosen with
  `uc.ctl_set_cpu_model` right after `Uc()` (`new_uc`). The default is `max`, as the guests this harness runs are
  written for `qemu-system-aarch64 -cpu max`. Unicorn's `max` is QEMU 5.0's (an A57 with more ID fields set:
  PAuth, SVE, BTI, PAN, UAO, ...), not QEMU 7.2's: the ID registers read as Unicorn's model gives them (README
  "CPU models" lists the differences a guest can see).
* Features (`features(model)`): the model's ID registers (Arm ARM DDI 0487 D17.2: ID_AA64PFR0/1, ID_AA64DFR0,
  ID_AA64ISAR0/1, ID_AA64MMFR0/1/2, MIDR) read once per process from a scratch Unicorn, and the fields the
  harness acts on decoded from them (`decode_features`, pure). They and `probe_undefined`'s answers are kept on
  disk for the next process (`probe_cache`, harness/probecache.py): a warm start makes no scratch Unicorn.
* Reset (`reset_controls`): QEMU virt boots `-kernel` with EL3 absent (and EL2 absent unless
  `virtualization=on`); Unicorn's CPUs always have EL3 and EL2, so their controls are set to behave as absent
  (QEMU hw/arm/boot.c `do_cpu_reset`/`arm_emulate_firmware_reset`, target/arm/cpu.c `arm_cpu_reset`):
  SCR_EL3 = NS | RW | HCE (+ API | APK with PAuth): Non-secure, lower ELs AArch64, HVC reaches the harness,
  pointer authentication and its key registers untrapped; CPTR_EL3 = EZ (with SVE; TFP clear); ZCR_EL3.LEN =
  0xF. For a guest started at EL1, EL2 is absent too: HCR_EL2 = RW (+ API | APK), CPTR_EL2 = 0, ZCR_EL2.LEN =
  0xF, MDCR_EL2 = 0 (nothing traps to it, EL1 sees its own vector length). A guest started at EL2 owns EL2 and
  gets QEMU's reset values there: HCR_EL2 = 0, CPTR_EL2 = 0, ZCR_EL2 = 0, MDCR_EL2.HPMN = PMCR_EL0.N (of the PMU
  harness/pmu.py serves: 6).
  CPACR_EL1 stays 0, as under QEMU: FP/SIMD and SVE are the guest's to enable (Unicorn 2.1 never raises the
  FP/SIMD trap, its `fp_exception_el` is a stub: see harness/exceptions.py).
"""
from __future__ import annotations

import functools
from devmodel.record import Frozen, assign

from unicorn import UC_ARCH_ARM64, UC_HOOK_INTR, UC_MODE_ARM, Uc, UcError
from unicorn.unicorn_const import UC_CTL_IO_WRITE, UC_CTL_TLB_FLUSH
from unicorn.arm64_const import (UC_ARM64_REG_PSTATE, UC_CPU_ARM64_A53, UC_CPU_ARM64_A57, UC_CPU_ARM64_A72,
                                 UC_CPU_ARM64_MAX)

from devmodel.pmu import PMUV3, PmuConfig

from .locations import cache_dir
from .probecache import ProbeCache, cache_key

__all__ = ["CPU_MODELS", "DEFAULT_CPU", "CpuFeatures", "features", "decode_features", "new_uc", "advertised_isar0",
           "reset_controls", "ID_REGS", "cpu_model", "probe_undefined", "PMU_CONFIGS", "probe_cache", "read_ids"]

#: --cpu NAME -> Unicorn model
CPU_MODELS = {"a53": UC_CPU_ARM64_A53, "a57": UC_CPU_ARM64_A57, "a72": UC_CPU_ARM64_A72, "max": UC_CPU_ARM64_MAX}
DEFAULT_CPU = "max"

# System registers (op0, op1, CRn, CRm, op2), Arm ARM D17.2.
SCR_EL3, CPTR_EL3, ZCR_EL3 = (3, 6, 1, 1, 0), (3, 6, 1, 1, 2), (3, 6, 1, 2, 0)
HCR_EL2, CPTR_EL2, ZCR_EL2, MDCR_EL2 = (3, 4, 1, 1, 0), (3, 4, 1, 1, 2), (3, 4, 1, 2, 0), (3, 4, 1, 1, 1)
PMUSERENR_EL0 = (3, 3, 9, 14, 0)
SCTLR_EL1, CPACR_EL1, CNTKCTL_EL1, CNTHCTL_EL2 = (3, 0, 1, 0, 0), (3, 0, 1, 0, 2), (3, 0, 14, 1, 0), (3, 4, 14, 1, 0)
# SCTLR_EL1 bits that let EL0 use DAIF (UMA 9), DC ZVA (DZE 14), CTR_EL0 (UCT 15), WFI/WFE (nTWI 16, nTWE 18)
# and cache maintenance (UCI 26) untrapped; CPACR_EL1.{FPEN, ZEN} = 0b11; every CNTKCTL/CNTHCTL access enable.
_SCTLR_EL0_UNTRAPPED = (1 << 9) | (1 << 14) | (1 << 15) | (1 << 16) | (1 << 18) | (1 << 26)
_CPACR_FULL = (3 << 20) | (3 << 16)
_PROBE_BASE = 0x1000
SCR_NS, SCR_HCE, SCR_RW, SCR_APK, SCR_API = 1 << 0, 1 << 8, 1 << 10, 1 << 16, 1 << 17
HCR_RW, HCR_APK, HCR_API = 1 << 31, 1 << 40, 1 << 41
CPTR_EL3_EZ = 1 << 8
ZCR_LEN_MAX = 0xF

#: ID registers read per model (name -> encoding)
ID_REGS = {"midr": (3, 0, 0, 0, 0), "pfr0": (3, 0, 0, 4, 0), "pfr1": (3, 0, 0, 4, 1), "dfr0": (3, 0, 0, 5, 0),
           "isar0": (3, 0, 0, 6, 0), "isar1": (3, 0, 0, 6, 1), "mmfr0": (3, 0, 0, 7, 0),
           "mmfr1": (3, 0, 0, 7, 1), "mmfr2": (3, 0, 0, 7, 2)}


#: The PMU of each model as QEMU 7.2 gives it (target/arm/cpu64.c reset_pmcr_el0 0x410n3000: IMP 'A', IDCODE,
#: N = 6; `max`: the A57's with FEAT_PMUv3p5, aarch64_max_tcg_initfn), served by harness/pmu.py
PMU_CONFIGS = {"max": PmuConfig.qemu_max(), "a57": PmuConfig(PMUV3, 0x41, 0x01, 6),
               "a72": PmuConfig(PMUV3, 0x41, 0x02, 6), "a53": PmuConfig(PMUV3, 0x41, 0x03, 6)}

#: ID_AA64ISAR0_EL1.TLB as `max` advertises it to the guest: 2 (FEAT_TLBIOS and FEAT_TLBIRANGE), as QEMU 7.2's
#: `max` (aarch64_max_tcg_initfn) does and as the TLBI trap implements them; Unicorn's QEMU 5.0 `max` reads 0
#: (`CpuFeatures.tlb` keeps Unicorn's value: it says what Unicorn executes natively)
MAX_ADVERTISED_TLB = 2
_ISAR0_TLB = 0xF << 56


def advertised_isar0(model: str, isar0: int) -> int:
    """ID_AA64ISAR0_EL1 as a guest of `model` reads it (guest_fw/tests/tlbi_features.c: as QEMU 7.2)."""
    if model != "max":
        return isar0
    return (isar0 & ~_ISAR0_TLB) | (max(_field(isar0, 56), MAX_ADVERTISED_TLB) << 56)


def _field(value: int, lsb: int, width: int = 4) -> int:
    return (value >> lsb) & ((1 << width) - 1)


class CpuFeatures(Frozen):
    """A model's ID register values and the features decoded from them (DDI 0487 D17.2 field names)."""
    __slots__ = ("model", "ids", "sve", "pauth", "pan", "uao", "bti", "ssbs", "mte", "dit", "brps", "wrps", "tlb",
                 "xs")
    model: str
    ids: tuple[tuple[str, int], ...]   # (name, value) of ID_REGS
    sve: bool          # ID_AA64PFR0_EL1.SVE [35:32]
    pauth: bool        # ID_AA64ISAR1_EL1.{APA [7:4], API [11:8], GPA [27:24], GPI [31:28]}
    pan: bool          # ID_AA64MMFR1_EL1.PAN [23:20]
    uao: bool          # ID_AA64MMFR2_EL1.UAO [7:4]
    bti: bool          # ID_AA64PFR1_EL1.BT [3:0]
    ssbs: bool         # ID_AA64PFR1_EL1.SSBS [7:4]
    mte: bool          # ID_AA64PFR1_EL1.MTE [11:8]
    dit: bool          # ID_AA64PFR0_EL1.DIT [51:48]
    brps: int          # breakpoints: ID_AA64DFR0_EL1.BRPs [15:12] + 1
    wrps: int          # watchpoints: ID_AA64DFR0_EL1.WRPs [23:20] + 1
    tlb: int           # ID_AA64ISAR0_EL1.TLB [59:56]: 1 = TLBI OS forms, 2 = OS and range forms
    xs: bool           # ID_AA64ISAR1_EL1.XS [59:56]: the nXS TLBIs

    def __init__(self, model: str, ids: tuple[tuple[str, int], ...], sve: bool, pauth: bool, pan: bool, uao: bool,
                 bti: bool, ssbs: bool, mte: bool, dit: bool, brps: int, wrps: int, tlb: int, xs: bool) -> None:
        assign(self, "model", model)
        assign(self, "ids", ids)
        assign(self, "sve", sve)
        assign(self, "pauth", pauth)
        assign(self, "pan", pan)
        assign(self, "uao", uao)
        assign(self, "bti", bti)
        assign(self, "ssbs", ssbs)
        assign(self, "mte", mte)
        assign(self, "dit", dit)
        assign(self, "brps", brps)
        assign(self, "wrps", wrps)
        assign(self, "tlb", tlb)
        assign(self, "xs", xs)

    def id(self, name: str) -> int:
        return dict(self.ids)[name]


def decode_features(model: str, ids: dict[str, int]) -> CpuFeatures:
    """The features of a model whose ID registers are `ids` (pure)."""
    pfr0, pfr1, isar1 = ids["pfr0"], ids["pfr1"], ids["isar1"]
    return CpuFeatures(
        model=model, ids=tuple(sorted(ids.items())),
        sve=_field(pfr0, 32) != 0,
        pauth=any(_field(isar1, lsb) for lsb in (4, 8, 24, 28)),
        pan=_field(ids["mmfr1"], 20) != 0, uao=_field(ids["mmfr2"], 4) != 0,
        bti=_field(pfr1, 0) != 0, ssbs=_field(pfr1, 4) != 0, mte=_field(pfr1, 8) != 0, dit=_field(pfr0, 48) != 0,
        brps=_field(ids["dfr0"], 12) + 1, wrps=_field(ids["dfr0"], 20) + 1,
        tlb=_field(ids["isar0"], 56), xs=_field(isar1, 56) != 0)


def cpu_model(name: str) -> int:
    """The Unicorn model of `--cpu NAME` (ValueError naming the choices)."""
    try:
        return CPU_MODELS[name]
    except KeyError:
        raise ValueError(f"unknown CPU model {name!r} (choose from {', '.join(CPU_MODELS)})") from None


def new_uc(model: str) -> Uc:
    """A Unicorn AArch64 instance of `model` (the model is set before anything runs, as Unicorn requires)."""
    uc = Uc(UC_ARCH_ARM64, UC_MODE_ARM)
    uc.ctl_set_cpu_model(cpu_model(model))
    return uc


@functools.lru_cache(maxsize=None)
def features(model: str) -> CpuFeatures:
    """The features of `model`, from its ID registers as the disk cache has them (`probe_cache`), else as read
    from a scratch Unicorn (then stored); once per process."""
    cpu_model(model)                                   # ValueError for a name no file may answer for
    disk = probe_cache()
    ids = disk.model_ids(model)
    if ids is None:
        ids = read_ids(model)
        disk.add_ids(model, ids)
    return decode_features(model, ids)


def read_ids(model: str) -> dict[str, int]:
    """The ID registers of `model` (ID_REGS) read from a new scratch Unicorn."""
    uc = new_uc(model)
    uc.ctl_set_tcg_buffer_size(1 << 20)
    return {name: uc.cpr_read(*enc) for name, enc in ID_REGS.items()}


@functools.lru_cache(maxsize=None)
def probe_cache() -> ProbeCache:
    """This process's disk cache of `features` and `probe_undefined` (harness/probecache.py), keyed on this
    file's source and the PMU counter counts `reset_controls` writes besides the Unicorn build: read once."""
    extra = tuple(sorted((m, c.counters) for m, c in PMU_CONFIGS.items()))
    try:
        directory = cache_dir()
    except (RuntimeError, KeyError, OSError):          # no home directory to name: probe, keep nothing
        directory = None
    return ProbeCache(directory, cache_key((__file__,), extra), ID_REGS)


def reset_controls(uc: Uc, feat: CpuFeatures, start_el: int) -> None:
    """Write the EL3/EL2 controls QEMU's `-kernel` boot leaves (module docstring) into a fresh `uc`."""
    scr = SCR_NS | SCR_RW | SCR_HCE | (SCR_API | SCR_APK if feat.pauth else 0)
    uc.cpr_write(*SCR_EL3, scr)
    uc.cpr_write(*CPTR_EL3, CPTR_EL3_EZ if feat.sve else 0)
    if feat.sve:
        uc.cpr_write(*ZCR_EL3, ZCR_LEN_MAX)
    if start_el == 2:
        uc.cpr_write(*HCR_EL2, 0)
        uc.cpr_write(*CPTR_EL2, 0)
        uc.cpr_write(*MDCR_EL2, PMU_CONFIGS[feat.model].counters)     # HPMN = PMCR_EL0.N (harness/pmu.py's)
        if feat.sve:
            uc.cpr_write(*ZCR_EL2, 0)
        return
    uc.cpr_write(*HCR_EL2, HCR_RW | (HCR_API | HCR_APK if feat.pauth else 0))
    uc.cpr_write(*CPTR_EL2, 0)
    uc.cpr_write(*MDCR_EL2, 0)
    if feat.sve:
        uc.cpr_write(*ZCR_EL2, ZCR_LEN_MAX)


@functools.lru_cache(maxsize=4096)
def probe_undefined(model: str, start_el: int, word: int, el: int, permissive: bool = False) -> bool:
    """Does Unicorn take an exception for the instruction `word` at `el`, on a scratch CPU of `model` in the reset
    state of a vCPU started at `start_el`? With `permissive`, every control that lets EL0/EL1 use a feature
    (SCTLR_EL1.UMA/DZE/UCT/nTWI/nTWE/UCI, CPACR_EL1.FPEN/ZEN, CNTKCTL_EL1, CNTHCTL_EL2, HCR_EL2.API/APK,
    PMUSERENR_EL0.EN/SW/CR/ER) is set
    and nothing traps to EL2: an instruction that faults there is UNDEFINED, one that does not but faulted on a
    vCPU was trapped by a control the guest set (harness/exceptions.py). A memory access it makes to the empty
    scratch address space counts as "not undefined". Cached; the scratch CPU is made once per (model, start
    EL, permissive) and put back in its saved state before each probe (`_Scratch`): a new Unicorn per probe
    cost ~1.5 ms, more than many catalogue guests' whole run. Kept on disk too (`probe_cache`): a warm start
    makes no scratch CPU."""
    cpu_model(model)
    key = (model, start_el, word, el, bool(permissive))
    disk = probe_cache()
    undef = disk.answer(key)
    if undef is None:
        undef = _scratch(model, start_el, permissive).probe(word, el)
        disk.add_answer(key, undef)
    return undef


@functools.lru_cache(maxsize=None)
def _scratch(model: str, start_el: int, permissive: bool) -> "_Scratch":
    return _Scratch(model, start_el, permissive)


class _Scratch:
    """One scratch CPU for `probe_undefined`: reset controls written once, the CPU context saved then
    (`uc.context_save`), and restored before each probe, with the translation cache and TLB flushed, so a
    probe starts from the same state as on a new Unicorn (tests/harness/test_cpu.py compares the two)."""

    def __init__(self, model: str, start_el: int, permissive: bool = False):
        feat = features(model)
        self.uc = uc = new_uc(model)
        uc.ctl_set_tcg_buffer_size(1 << 20)
        uc.mem_map(_PROBE_BASE, 0x1000)
        reset_controls(uc, feat, start_el)
        if permissive:
            uc.cpr_write(*SCTLR_EL1, uc.cpr_read(*SCTLR_EL1) | _SCTLR_EL0_UNTRAPPED)
            uc.cpr_write(*CPACR_EL1, _CPACR_FULL)
            uc.cpr_write(*CNTKCTL_EL1, 0x303)              # EL0PCTEN, EL0VCTEN, EL0VTEN, EL0PTEN
            uc.cpr_write(*CNTHCTL_EL2, 0x3)                # EL1PCTEN, EL1PCEN
            uc.cpr_write(*HCR_EL2, HCR_RW | (HCR_API | HCR_APK if feat.pauth else 0))
            uc.cpr_write(*PMUSERENR_EL0, 0xF)
        self.saved = uc.context_save()
        self.taken: list[int] = []
        uc.hook_add(UC_HOOK_INTR, self._on_intr)

    def _on_intr(self, u: Uc, intno: int, _ud: object) -> None:
        self.taken.append(intno)
        u.emu_stop()

    def probe(self, word: int, el: int) -> bool:
        uc = self.uc
        uc.context_restore(self.saved)
        uc.ctl_flush_tb()                                  # the previous probe's word is translated
        uc.ctl(UC_CTL_TLB_FLUSH, UC_CTL_IO_WRITE)
        uc.mem_write(_PROBE_BASE, word.to_bytes(4, "little") + bytes(0x1000 - 4))
        uc.reg_write(UC_ARM64_REG_PSTATE, (0xF << 6) | (el << 2) | (1 if el else 0))
        uc.cpr_write(*SCR_EL3, uc.cpr_read(*SCR_EL3))      # a PSTATE.EL write takes effect at the next sysreg write
        self.taken.clear()
        try:
            uc.emu_start(_PROBE_BASE, _PROBE_BASE + 4, count=1)
        except UcError:
            return False                                   # it accessed memory: an instruction that exists
        return bool(self.taken)


def fresh_probe(model: str, start_el: int, word: int, el: int, permissive: bool = False) -> bool:
    """`probe_undefined` on a new scratch CPU (what the reused one must match; tests)."""
    return _Scratch(model, start_el, permissive).probe(word, el)
