"""harness/cpu.py: the CPU models, their features from the ID registers, the reset state QEMU's -kernel boot
leaves (EL3 absent, EL2 absent unless the guest starts there), and the scratch-CPU probe."""
from __future__ import annotations

import pytest
from unicorn.arm64_const import UC_ARM64_REG_PC, UC_ARM64_REG_PSTATE

from harness.cpu import (CPU_MODELS, DEFAULT_CPU, _Scratch, cpu_model, decode_features, features,
                         fresh_probe, new_uc, probe_undefined, reset_controls)
from harness.machine import Machine
from harness.sysregs import mrs_word, msr_word

SCR_EL3, CPTR_EL3, ZCR_EL3 = (3, 6, 1, 1, 0), (3, 6, 1, 1, 2), (3, 6, 1, 2, 0)
HCR_EL2, CPTR_EL2, ZCR_EL2, MDCR_EL2 = (3, 4, 1, 1, 0), (3, 4, 1, 1, 2), (3, 4, 1, 2, 0), (3, 4, 1, 1, 1)
CPACR_EL1, MIDR_EL1 = (3, 0, 1, 0, 2), (3, 0, 0, 0, 0)
RES1 = 0x30                                      # SCR_EL3 bits [5:4] are RES1 (Arm ARM, SCR_EL3)
APGAKEYHI_EL1, ZCR_EL1, CTR_EL0 = (3, 0, 2, 3, 1), (3, 0, 1, 2, 0), (3, 3, 0, 0, 1)
PACGA = 0x9AC43062                               # pacga x2, x3, x4
CNTW = 0x04A0E3E1                                # cntw x1
WFI = 0xD503207F
SCTLR_EL1, CNTKCTL_EL1, CNTHCTL_EL2, PMUSERENR_EL0 = (3, 0, 1, 0, 0), (3, 0, 14, 1, 0), (3, 4, 14, 1, 0), (3, 3, 9, 14, 0)
CNTPCT_EL0, PMCCNTR_EL0 = (3, 3, 14, 0, 1), (3, 3, 9, 13, 0)


def test_default_is_max_and_every_model_is_selectable():
    assert DEFAULT_CPU == "max" and set(CPU_MODELS) == {"a53", "a57", "a72", "max"}
    midrs = {m: new_uc(m).cpr_read(*MIDR_EL1) for m in CPU_MODELS}
    # Cortex-A53/A57/A72 part numbers 0xd03/0xd07/0xd08; QEMU's max: implementer 0, architecture 0xf, 'Q'
    assert {m: (v >> 4) & 0xFFF for m, v in midrs.items()} == {"a53": 0xD03, "a57": 0xD07, "a72": 0xD08,
                                                               "max": 0x051}
    with pytest.raises(ValueError, match="a53, a57, a72, max"):
        cpu_model("a76")


def test_features_decode_the_id_registers():
    mx, a72 = features("max"), features("a72")
    assert (mx.sve, mx.pauth, mx.pan, mx.uao, mx.bti) == (True,) * 5
    assert (a72.sve, a72.pauth, a72.pan, a72.uao, a72.bti) == (False,) * 5
    assert (mx.brps, mx.wrps) == (a72.brps, a72.wrps) == (6, 4)      # ID_AA64DFR0_EL1.BRPs = 5, WRPs = 3
    assert mx.tlb == 0 and not mx.xs                                 # no OS/range TLBIs in Unicorn's max
    ids = dict(mx.ids)
    assert decode_features("x", ids) == mx._replace(model="x")
    assert decode_features("x", {**ids, "pfr0": ids["pfr0"] & ~(0xF << 32)}).sve is False


@pytest.mark.parametrize("start_el", [1, 2])
def test_reset_controls_are_qemus_kernel_boot(start_el):
    uc = new_uc("max")
    reset_controls(uc, features("max"), start_el)
    assert uc.cpr_read(*SCR_EL3) == 1 | 1 << 8 | 1 << 10 | 1 << 16 | 1 << 17 | RES1   # NS HCE RW APK API
    assert uc.cpr_read(*CPTR_EL3) == 1 << 8 and uc.cpr_read(*ZCR_EL3) == 0xF   # EZ; EL3 does not cap VL
    assert uc.cpr_read(*CPTR_EL2) == 0 and uc.cpr_read(*CPACR_EL1) == 0
    if start_el == 1:        # no EL2 for the guest: nothing traps to it, it does not cap the vector length
        assert uc.cpr_read(*HCR_EL2) == 1 << 31 | 1 << 40 | 1 << 41 and uc.cpr_read(*ZCR_EL2) == 0xF
        assert uc.cpr_read(*MDCR_EL2) == 0
    else:                    # the guest's own EL2, as QEMU resets it (HPMN = PMCR_EL0.N of the PMU the guest
        # sees: harness/pmu.py's, N = 6 as QEMU 7.2's -cpu max; Unicorn's own PMCR_EL0.N is 4)
        assert uc.cpr_read(*HCR_EL2) == 0 and uc.cpr_read(*ZCR_EL2) == 0
        assert uc.cpr_read(*MDCR_EL2) == 6


def test_a72_reset_has_no_pauth_or_sve_controls():
    uc = new_uc("a72")
    reset_controls(uc, features("a72"), 1)
    assert uc.cpr_read(*SCR_EL3) == 0x501 | RES1 and uc.cpr_read(*HCR_EL2) == 1 << 31 and uc.cpr_read(*CPTR_EL3) == 0


def test_vcpus_get_the_model_and_its_reset_state():
    m = Machine(console=lambda vm, d, s: None, tcg_buffer_size=8 << 20, cpu="a57")
    vm0 = m.add_vm(ram_size=16 << 20)
    vm1 = m.add_vm(ram_size=16 << 20, cpu="max", start_el=2)
    v0, v1 = vm0.vcpus[0], vm1.vcpus[0]
    assert (vm0.cpu, v0.cpu, v0.features.model, vm1.cpu, v1.features.sve) == ("a57", "a57", "a57", "max", True)
    assert (v0.uc.cpr_read(*MIDR_EL1) >> 4) & 0xFFF == 0xD07
    assert v1.uc.cpr_read(*HCR_EL2) == 0
    with pytest.raises(ValueError):
        m.add_vm(ram_size=16 << 20, cpu="nope")


@pytest.mark.parametrize("word,el,start_el,permissive,undef", [
    (PACGA, 1, 1, False, False),                 # API set at EL3 and EL2: PAuth works at EL1
    (PACGA, 1, 2, False, True),                  # a guest's own EL2 has HCR_EL2.API = 0 at reset: trapped
    (PACGA, 1, 2, True, False),                  # ... which the permissive probe lifts
    (mrs_word(APGAKEYHI_EL1), 1, 1, False, False),
    (CNTW, 1, 1, False, True),                   # CPACR_EL1.ZEN = 0 at reset: SVE traps
    (CNTW, 1, 1, True, False),
    (mrs_word(ZCR_EL1), 1, 1, False, True), (mrs_word(ZCR_EL1), 1, 1, True, False),
    (mrs_word(CTR_EL0), 0, 1, False, True),      # SCTLR_EL1.UCT = 0 at reset
    (mrs_word(CTR_EL0), 0, 1, True, False),
    (msr_word(HCR_EL2), 1, 1, True, True),       # an EL2 register at EL1 is UNDEFINED, whatever the controls
    (0x00000000, 1, 1, True, True),              # UDF
])
def test_probe_undefined(word, el, start_el, permissive, undef):
    assert probe_undefined("max", start_el, word, el, permissive) is undef


def test_probe_runs_at_the_requested_el():
    uc = new_uc("max")
    uc.reg_write(UC_ARM64_REG_PSTATE, 0x3C5)
    assert probe_undefined("max", 1, mrs_word((3, 4, 1, 1, 0)), 2) is False      # MRS HCR_EL2 at EL2
    assert probe_undefined("max", 1, WFI, 0) is False                           # nTWI = 1 at reset


def test_unicorn_never_raises_the_simd_fp_access_trap():
    """Why harness/exceptions.py has no EC 0x07: with CPACR_EL1.FPEN = 0 an FMOV at EL1 traps on hardware and
    under QEMU, but Unicorn 2.1.4 runs it (its fp_exception_el is a stub returning 0)."""
    uc = new_uc("max")
    reset_controls(uc, features("max"), 1)
    uc.mem_map(0x1000, 0x1000)
    uc.mem_write(0x1000, (0x9E670020).to_bytes(4, "little"))               # fmov d0, x1
    uc.reg_write(UC_ARM64_REG_PSTATE, 0x3C5)
    assert uc.cpr_read(*CPACR_EL1) == 0
    uc.emu_start(0x1000, 0x1004, count=1)
    assert uc.reg_read(UC_ARM64_REG_PC) == 0x1004


def test_cli_cpu_option():
    from guestbin import guest_elf, run_cli
    p = run_cli("run", guest_elf("hello"), "--cpu", "a53")
    assert p.returncode == 0 and "hello" in p.stdout.lower()
    p = run_cli("run", guest_elf("pauth"), "--cpu", "a72")                  # no PAuth on the Cortex-A72
    assert p.returncode == 132 and "msr apiakeylo_el1" in p.stderr and p.stderr.count("\n") == 1, p.stderr
    p = run_cli("run", guest_elf("hello"), "--cpu", "a76")
    assert p.returncode == 125 and "a53" in p.stderr and p.stderr.count("\n") == 1, p.stderr


# MSRs that change what later probes see if state leaked between probes (X0 = 0 is written), each followed by
# accesses those controls gate; then a seeded sample of the system-register space
_LEAKY = [msr_word(e) for e in (SCTLR_EL1, CPACR_EL1, HCR_EL2, CPTR_EL2, MDCR_EL2, PMUSERENR_EL0, CNTKCTL_EL1,
                                CNTHCTL_EL2, SCR_EL3, CPTR_EL3)]
_GATED = [PACGA, CNTW, WFI, mrs_word(CTR_EL0), mrs_word(ZCR_EL1), mrs_word(APGAKEYHI_EL1), mrs_word(CNTPCT_EL0),
          mrs_word(PMCCNTR_EL0), 0xD50B7420]                               # dc zva, x0


def _sample(seed: int, n: int) -> list[int]:
    import random
    rnd = random.Random(seed)
    return [(msr_word if rnd.random() < 0.5 else mrs_word)((3, rnd.choice((0, 3, 4, 6)), rnd.randrange(16),
                                                               rnd.randrange(16), rnd.randrange(8)))
            for _ in range(n)]


@pytest.mark.parametrize("start_el,permissive", [(1, False), (1, True), (2, False), (2, True)])
def test_the_reused_scratch_cpu_answers_as_a_new_one(start_el, permissive):
    """probe_undefined reuses one scratch CPU (context restored per probe): every answer, in a sequence of
    state-changing MSRs and the accesses they gate, is the answer of a new Unicorn."""
    scratch = _Scratch("max", start_el, permissive)
    words = [w for pair in zip(_LEAKY, _GATED * 2) for w in pair] + _GATED + _sample(start_el * 2 + permissive, 12)
    for el in (0, 1, 2):
        for w in words:
            assert scratch.probe(w, el) is fresh_probe("max", start_el, w, el, permissive), (hex(w), el)


@pytest.mark.parametrize("start_el,permissive", [(1, False), (2, True)])
def test_the_disk_cache_answers_as_a_new_one(tmp_path, monkeypatch, start_el, permissive):
    """probe_undefined's answers and features' ID registers as a new process reads them back from the disk cache
    (harness/probecache.py) are a new Unicorn's."""
    from harness import cpu
    from harness.probecache import ProbeCache, cache_key

    key = cache_key((cpu.__file__,), (("test", start_el),))
    words = _LEAKY + _GATED + _sample(start_el * 2 + permissive + 7, 12)
    try:
        for disk in (ProbeCache(tmp_path, key, cpu.ID_REGS), ProbeCache(tmp_path, key, cpu.ID_REGS)):
            probe_undefined.cache_clear()
            features.cache_clear()
            monkeypatch.setattr(cpu, "probe_cache", lambda: disk)
            got = [probe_undefined("max", start_el, w, el, permissive) for el in (0, 1, 2) for w in words]
            assert features("max").ids == tuple(sorted(cpu.read_ids("max").items()))
            disk.flush()
        assert disk.count == 0 and disk.learned == ({}, {})                     # all read from the file
        assert got == [fresh_probe("max", start_el, w, el, permissive) for el in (0, 1, 2) for w in words]
    finally:
        probe_undefined.cache_clear()
        features.cache_clear()
