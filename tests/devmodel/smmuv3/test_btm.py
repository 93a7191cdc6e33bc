"""Broadcast TLB maintenance: DVM TLBI messages (`TlbiOp`) applied by `TranslationCore.dvm_tlbi`, per-context
broadcast counters (over-invalidation of stage-2-only contexts, as the review of Linux's "iommu/arm-smmu-v3:
Enable broadcast TLB maintenance" describes), DVM Sync, malformed messages."""
from __future__ import annotations

import pytest

from devmodel.smmuv3.btm import VALID_SCOPES, malformed
from devmodel.smmuv3.config import CfgKind, StreamWorld, TransResult
from devmodel.smmuv3.regs import SmmuFeatures
from devmodel.tlbi import TABLE, decode
from devmodel.tlbi_types import DecodeContext, Regime, Scope, Security, Stage, UndefinedTlbi

from .test_walk import Nested
from .xlat_env import RAM_BASE, Env, cfg, cpu_range, op, s1, s2

P1, P2 = RAM_BASE + 0x10_0000, RAM_BASE + 0x80_0000
VA = 0x7654_3000


def _env(asid=5, vmid=9, aset=False, **kw):
    env = Env(**kw)
    b = env.builder()
    sb = env.builder(stage=2, ias=40, start=1)
    c = cfg(CfgKind.S1, s1(b, asid=asid, aset=aset), s2(sb, vmid=vmid))
    return env, b, c


def _pa(env, c, va):
    r = env.core.translate(c, va)
    return r.pa if isinstance(r, TransResult) else r


def _stale(env, b, c, va=VA):
    b.map(va, P1, 0x1000)
    assert _pa(env, c, va) == P1
    b.map(va, P2, 0x1000)
    assert _pa(env, c, va) == P1


@pytest.mark.parametrize("good,bad", [
    (op("VAE1IS", scope=Scope.VA, vmid=9, asid=5, addr=VA),
     [op("VAE1IS", scope=Scope.VA, vmid=8, asid=5, addr=VA), op("VAE1IS", scope=Scope.VA, vmid=9, asid=6, addr=VA),
      op("VAE1IS", scope=Scope.VA, vmid=9, asid=5, addr=VA + 0x1000),
      op("VAE1IS", scope=Scope.VA, vmid=9, asid=5, addr=VA, security=Security.S),
      op("VAE2IS", scope=Scope.VA, regime=Regime.EL2, asid=None, addr=VA),
      op("IPAS2E1IS", scope=Scope.IPA, stage=Stage.S2, vmid=9, addr=VA)]),
    (op("VAAE1IS", scope=Scope.VAA, vmid=9, addr=VA), [op("VAAE1IS", scope=Scope.VAA, vmid=1, addr=VA)]),
    (op("ASIDE1IS", scope=Scope.ASID, vmid=9, asid=5), [op("ASIDE1IS", scope=Scope.ASID, vmid=9, asid=4)]),
    (op("VMALLE1IS", scope=Scope.VMALL, vmid=9), [op("VMALLE1IS", scope=Scope.VMALL, vmid=10),
                                                  op("ALLE2IS", scope=Scope.ALL, regime=Regime.EL2)]),
    (op("VMALLS12E1IS", scope=Scope.VMALL, stage=Stage.S12, vmid=9), []),
    (op("ALLE1IS", scope=Scope.ALL, stage=Stage.S12), [op("ALLE3IS", scope=Scope.ALL, regime=Regime.EL3)]),
    (op("RVAE1IS", scope=Scope.VA, vmid=9, asid=5, addr=VA - 0x3000, size=cpu_range(1, 0, 1), tg=1, num=1,
        scale=0), [op("RVAE1IS", scope=Scope.VA, vmid=9, asid=5, addr=VA - 0x5000, size=cpu_range(1, 0, 0),
                      tg=1, num=0, scale=0)]),
])
def test_broadcast_stale_entries(good, bad):
    env, b, c = _env()
    _stale(env, b, c)
    for o in bad:
        env.core.dvm_tlbi(o)
        assert _pa(env, c, VA) == P1, f"{o.name} vmid={o.vmid} asid={o.asid} must not hit"
    env.core.dvm_tlbi(good)
    env.core.dvm_sync()
    assert _pa(env, c, VA) == P2
    assert env.core.stats["dvm_syncs"] == 1


def test_aset_exempts_from_asid_specific_broadcasts():
    env, b, c = _env(aset=True)
    _stale(env, b, c)
    env.core.dvm_tlbi(op("ASIDE1IS", scope=Scope.ASID, vmid=9, asid=5))
    env.core.dvm_tlbi(op("VAE1IS", scope=Scope.VA, vmid=9, asid=5, addr=VA))
    assert _pa(env, c, VA) == P1                  # ASET=1: not shared with the CPUs' ASIDs
    env.core.dvm_tlbi(op("VAAE1IS", scope=Scope.VAA, vmid=9, addr=VA))
    assert _pa(env, c, VA) == P2                  # all-ASID operations still hit
    env2, b2, c2 = _env(aset=True)
    _stale(env2, b2, c2)
    env2.core.dvm_tlbi(op("VMALLE1IS", scope=Scope.VMALL, vmid=9))
    assert _pa(env2, c2, VA) == P2
    # a command (not a broadcast) ignores ASET
    env3, b3, c3 = _env(aset=True)
    _stale(env3, b3, c3)
    from devmodel.smmuv3.commands import decode, encode
    env3.core.invalidate(decode(encode("TLBI_NH_ASID", vmid=9, asid=5)))
    assert _pa(env3, c3, VA) == P2


def test_ttl_in_broadcast():
    env, b, c = _env()
    _stale(env, b, c)
    env.core.dvm_tlbi(op("VALE1IS", scope=Scope.VA, vmid=9, asid=5, addr=VA, leaf=True, ttl=0b0110))  # 4K, L2
    assert _pa(env, c, VA) == P1                  # the entry is level 3: a level-2 hint need not hit it
    env.core.dvm_tlbi(op("VALE1IS", scope=Scope.VA, vmid=9, asid=5, addr=VA, leaf=True, ttl=0b0111))
    assert _pa(env, c, VA) == P2


def test_ipas2_hits_stage2_only_contexts():
    env = Env()
    sb = env.builder(stage=2, ias=40, start=1)
    c = cfg(CfgKind.S2, None, s2(sb, vmid=6))
    sb.map(0x40_0000, P1, 0x1000)
    assert _pa(env, c, 0x40_0000) == P1
    sb.map(0x40_0000, P2, 0x1000)
    env.core.dvm_tlbi(op("VAE1IS", scope=Scope.VA, vmid=6, asid=0, addr=0x40_0000))   # stage 1: no hit
    env.core.dvm_tlbi(op("IPAS2E1IS", scope=Scope.IPA, stage=Stage.S2, vmid=7, addr=0x40_0000))
    assert _pa(env, c, 0x40_0000) == P1
    env.core.dvm_tlbi(op("IPAS2E1IS", scope=Scope.IPA, stage=Stage.S2, vmid=6, addr=0x40_0000))
    assert _pa(env, c, 0x40_0000) == P2


def test_over_invalidation_of_stage2_only_contexts_is_counted():
    """BTM review: a stage-2-only SMMU context whose VMID equals a KVM VMID sees the guest's stage-1 broadcasts."""
    for remove in (False, True):
        env = Env(overinvalidate_s2=remove)
        sb = env.builder(stage=2, ias=40, start=1)
        sb.map(0, RAM_BASE, 0x10_0000)
        c_s2 = cfg(CfgKind.S2, None, s2(sb, vmid=6))
        b = env.builder()
        b.map(VA, P1, 0x1000)
        c_s1 = cfg(CfgKind.S1, s1(b, asid=2), s2(sb, vmid=7), sid=2)
        for ipa in range(0, 0x10_0000, 0x1000):
            _pa(env, c_s2, ipa)
        _pa(env, c_s1, VA)
        n = 10
        for i in range(n):                          # a guest with KVM VMID 6 invalidating its own VAs
            env.core.dvm_tlbi(op("VAE1IS", scope=Scope.VA, vmid=6, asid=3, addr=0x1000 * i))
        env.core.dvm_tlbi(op("VMALLE1IS", scope=Scope.VMALL, vmid=6))
        s2ctx = env.core.btm_context(StreamWorld.NS_EL1, 6, None, "s2")
        assert s2ctx["over"] == n + 1 and s2ctx["hits"] == 0
        assert env.core.btm_context(StreamWorld.NS_EL1, 7, 2, "s1") == {"hits": 0, "over": 0, "removed": 0}
        cached = env.core.translate(c_s2, 0x5000).cached
        assert cached is (not remove)               # removed only when the policy says the hardware does
        assert env.core.stats["btm"]["NS-EL1/vmid=6/asid=None/s2"]["over"] == n + 1
        # an architectural stage-2 hit is counted as a hit, not over
        env.core.dvm_tlbi(op("IPAS2E1IS", scope=Scope.IPA, stage=Stage.S2, vmid=6, addr=0x5000))
        assert env.core.btm_context(StreamWorld.NS_EL1, 6, None, "s2")["hits"] == 1
        # the VMID-7 stage-1 context is reached by its own VMID's broadcast
        env.core.dvm_tlbi(op("ASIDE1IS", scope=Scope.ASID, vmid=7, asid=2))
        ctx = env.core.btm_context(StreamWorld.NS_EL1, 7, 2, "s1")
        assert ctx["hits"] == 1 and ctx["removed"] == 1


def test_nested_combined_entries_hit_by_guest_broadcast():
    n = Nested()
    n.s1b.map(VA, 0x30_0000, 0x1000)
    core = n.env.core
    assert core.translate(n.cfg, VA).pa == n.off + 0x30_0000
    n.s1b.map(VA, 0x31_0000, 0x1000)
    core.dvm_tlbi(op("VAE1IS", scope=Scope.VA, vmid=3, asid=8, addr=VA))
    assert core.translate(n.cfg, VA).pa == n.off + 0x30_0000
    core.dvm_tlbi(op("VAE1IS", scope=Scope.VA, vmid=3, asid=7, addr=VA))     # the guest's own VMID/ASID
    assert core.translate(n.cfg, VA).pa == n.off + 0x31_0000


def test_trace_events_and_garbage_ops():
    env = Env(trace="smmu_btm_*,smmu_dvm_sync,smmu_iotlb_inv")
    b = env.builder()
    c = cfg(CfgKind.S1, s1(b, asid=5), None)
    b.map(VA, P1, 0x1000)
    _pa(env, c, VA)
    env.core.dvm_tlbi(op("VAE1IS", scope=Scope.VA, vmid=0, asid=5, addr=VA))
    env.core.dvm_sync()
    recs = env.sink.of("smmu_btm_tlbi")
    assert len(recs) == 1 and recs[0]["removed"] == 1 and recs[0]["contexts"] >= 1
    assert env.sink.of("smmu_dvm_sync") and env.sink.of("smmu_btm_ctx")
    assert env.sink.of("smmu_iotlb_inv")[0]["cause"] == "dvm:VAE1IS"
    with pytest.raises(AttributeError):                                 # not a DVM message: a caller's bug
        env.core.dvm_tlbi(None)
    env.core.dvm_tlbi(op("PAALLOS", scope=Scope.PA, regime=Regime.GPT))
    env.core.dvm_tlbi(op("VAE1IS", scope=Scope.VA, vmid=0, asid=5, addr=-1, size=-7))
    assert env.core.dvm_malformed == 1 and env.core.stats["dvm_malformed"] == 1     # the bad address, counted
    assert env.sink.of("smmu_btm_tlbi")[-1]["malformed"].startswith("va operation with address -1")


# ---- malformed DVM messages: validated explicitly, counted, applied to nothing ------------------------------
@pytest.mark.parametrize("bad,why,features", [
    (op("VAE1IS", scope=Scope.VA, vmid=0x1_0000, asid=5, addr=VA), "VMID 65536", None),
    (op("VAE1IS", scope=Scope.VA, vmid=0x109, asid=5, addr=VA), "8-bit VMIDs", SmmuFeatures(vmid16=False)),
    (op("VAE1IS", scope=Scope.VA, vmid=9, asid=0x105, addr=VA), "8-bit ASIDs", SmmuFeatures(asid16=False)),
    (op("ASIDE1IS", scope=Scope.ASID, vmid=9), "without an ASID", None),
    (op("VAE1IS", scope=Scope.VA, vmid=9, asid=5), "address None", None),
    (op("VAE1IS", scope=Scope.VA, vmid=9, asid=5, addr=1 << 64), "address", None),
    (op("IPAS2E1IS", scope=Scope.IPA, stage=Stage.S2, regime=Regime.EL2, addr=VA), "no TLBI operates", None),
    (op("VMALLE1IS", scope=Scope.PA, vmid=9), "no TLBI operates", None),
    (op("VMALLE1IS", scope=Scope.VMALL, vmid=9, security=Security.ROOT), "Security state", None),
    (op("VAE1IS", scope=Scope.VA, vmid=9, asid=5, addr=VA, ttl=16), "TTL", None),
])
def test_malformed_broadcast_is_counted_and_applies_to_nothing(bad, why, features):
    env, b, c = _env(trace="smmu_btm_tlbi", features=features)
    _stale(env, b, c)
    res = env.core.dvm_tlbi(bad)
    assert why in res["malformed"] and res["removed"] == 0
    assert _pa(env, c, VA) == P1                                        # nothing was invalidated
    assert env.core.dvm_malformed == 1 and env.core.iotlb.invalidations["dvm:malformed"]["ops"] == 1
    rec = env.sink.of("smmu_btm_tlbi")[-1]
    assert why in rec["malformed"] and rec["contexts"] == 0
    good = env.core.dvm_tlbi(op("VMALLE1IS", scope=Scope.VMALL, vmid=9))
    assert good["malformed"] == "" and _pa(env, c, VA) == P2 and env.core.dvm_malformed == 1


def test_every_decoded_tlbi_is_a_well_formed_message():
    """The decoder (DDI 0487 C5.5 table) is the oracle for what `btm.malformed` must accept."""
    ctxs = [DecodeContext(el=1, vmid=3), DecodeContext(el=2, vmid=3), DecodeContext(el=2, vmid=3, e2h=True),
            DecodeContext(el=2, vmid=3, e2h=True, tge=True), DecodeContext(el=3, vmid=3, security=Security.S)]
    seen = set()
    for d in TABLE:
        for ctx in ctxs:
            for xt in (0, 0xFFFF_FFFF_FFFF_FFFF, 0x0005_1234_5678_9ABC):
                try:
                    o = decode(d.op1, d.crn, d.crm, d.op2, xt, ctx)
                except UndefinedTlbi:
                    continue
                assert malformed(o) is None, (o, malformed(o))
                seen.add((o.regime, o.scope))
    assert seen == {(r, s) for r, scopes in VALID_SCOPES.items() for s in scopes}


def test_malformed_broadcast_through_the_device_is_not_applied():
    from .bench import CR0, CR2, Bench
    b = Bench(SmmuFeatures(btm=True, vmid16=False))
    b.setup(enable=False)
    b.w32(CR2, 0b10)                                                    # PTM=0
    b.w32(CR0, 0b1101)
    b.smmu.dvm_tlbi(op("VMALLE1IS", scope=Scope.VMALL, vmid=0x100), 7)
    assert b.smmu.stats["btm_malformed"] == 1 and b.smmu.stats["btm_applied"] == 0
    assert b.sink.of("smmuv3_dvm_tlbi")[-1]["applied"] == 0 and b.smmu.core.dvm_malformed == 1
