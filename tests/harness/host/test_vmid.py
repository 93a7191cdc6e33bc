"""Hand-worked sequences for the VMID allocator (Linux arch/arm64/kvm/vmid.c + pinned ids like mm/context.c)."""
from __future__ import annotations

import pytest

from devmodel.tlbi_types import Regime, Scope, Stage
from devmodel.trace import ListSink, Tracer
from harness.host.vmid import ALLE1IS, VmidAllocator


def test_first_allocations_8bit():
    a = VmidAllocator(8, 1)
    assert a.generation == 0x100 and a.rollovers == 0
    ctxs = [a.new_context() for _ in range(3)]
    assert [c.id for c in ctxs] == [0, 0, 0]
    assert [a.vcpu_load(c, 0) for c in ctxs] == [1, 2, 3]       # index 0 is skipped
    assert [c.id for c in ctxs] == [0x101, 0x102, 0x103]
    assert a.cur_idx == 3
    assert a.map_bits() == {1, 2, 3}


def test_first_allocations_16bit():
    a = VmidAllocator(16, 4)
    c = a.new_context()
    assert a.vcpu_load(c, 2) == 1
    assert c.id == 0x1_0001 and a.generation == 0x1_0000 and a.mask == 0xFFFF
    assert a.max_pinned == 0x1_0000 - 4 - 2


def test_fast_path_and_active_invalid():
    a = VmidAllocator(8, 2)
    x, y = a.new_context(), a.new_context()
    a.vcpu_load(x, 0)
    assert not a.last_fast                     # first load: id 0 is not of this generation
    a.vcpu_put(0)
    assert a.active[0] == a.active_invalid == 0x100   # VMID_ACTIVE_INVALID = generation 1, index 0
    assert a.vcpu_load(x, 0) == 1 and a.last_fast
    a.vcpu_put(0)
    a.vcpu_load(y, 0)                          # new id for y: slow path
    assert not a.last_fast
    a.vcpu_load(x, 1)                          # CPU 1 never ran anything: active 0 -> slow path, same id
    assert not a.last_fast and x.id == 0x101


def test_rollover_keeps_active_and_reserved_and_broadcasts(dvm):
    ic, rec = dvm
    a = VmidAllocator(8, 2, interconnect=ic)
    A, B = a.new_context("A"), a.new_context("B")
    assert a.vcpu_load(A, 0) == 1              # A stays loaded on CPU 0
    assert a.vcpu_load(B, 1) == 2
    a.vcpu_put(1)                              # B scheduled out: CPU 1 holds VMID_ACTIVE_INVALID
    n = a.force_rollover()
    assert n == 254                            # 253 throwaways fill 3..255, the 254th rolls over
    assert a.rollovers == 1 and a.generation == 0x200
    # flush_context: active ids become reserved; the put CPU reserves index 0 only.
    assert a.reserved == [0x101, 0x100] and a.active == [0, 0]
    # The throwaway that rolled over took the first free index: 2 (B's), not 1 (A's, reserved).
    assert a.map_bits() == {0, 1, 2}
    # Exactly one broadcast TLBI ALLE1IS, then a DVM Sync.
    assert [k for k, _ in rec.log] == ["tlbi", "sync"]
    op = rec.log[0][1]
    assert op is ALLE1IS
    assert (op.op1, op.crn, op.crm, op.op2) == (4, 8, 3, 4)
    assert op.vmid is None and op.scope is Scope.ALL and op.stage is Stage.S12 and op.regime is Regime.EL10
    # A (active during the rollover) keeps its VMID, even loaded on the other CPU.
    assert a.vcpu_load(A, 1) == 1 and A.id == 0x201
    assert a.reserved[0] == 0x201             # every reserved copy moved to the new generation
    # B lost index 2 to the throwaway: the search resumes at cur_idx.
    assert a.vcpu_load(B, 1) == 3 and B.id == 0x203


def test_cur_idx_after_rollover_and_reuse_does_not_move_it():
    a = VmidAllocator(8, 1)
    vms = [a.new_context(f"v{i}") for i in range(255)]
    for v in vms:                              # indices 1..255, each put afterwards
        a.vcpu_load(v, 0)
        a.vcpu_put(0)
    assert [v.id & 0xFF for v in vms[:3]] == [1, 2, 3] and vms[-1].id == 0x1FF
    late = a.new_context("late")
    assert a.vcpu_load(late, 0) == 1           # rollover; CPU 0 was put, so nothing is reserved but 0
    assert a.rollovers == 1 and a.cur_idx == 1
    a.vcpu_put(0)
    # The old holders of 1, 2, 3 come back in order: each finds its index taken and searches from cur_idx.
    assert a.vcpu_load(vms[0], 0) == 2
    assert a.vcpu_load(vms[1], 0) == 3
    assert a.vcpu_load(vms[2], 0) == 4
    assert a.cur_idx == 4
    # vms[199] had index 200, still free in this generation: it gets it back without moving cur_idx.
    assert a.vcpu_load(vms[199], 0) == 200 and a.cur_idx == 4
    # A new VM continues after cur_idx.
    assert a.vcpu_load(a.new_context(), 0) == 5


def test_16bit_rollover_count():
    a = VmidAllocator(16, 1)
    c = a.new_context()
    a.vcpu_load(c, 0)
    a.vcpu_put(0)
    assert a.force_rollover() == 0xFFFF - 1 + 1    # 2..0xFFFF fill, one more rolls over
    assert a.generation == 0x2_0000
    assert a.vcpu_load(c, 0) == 2                   # the throwaway took index 1


@pytest.mark.parametrize("bits", [8, 16])
def test_index_zero_never_returned(bits):
    a = VmidAllocator(bits, 3)
    vms = [a.new_context() for _ in range(40)]
    seen = set()
    for r in range(3 if bits == 8 else 1):
        for i, v in enumerate(vms):
            hw = a.vcpu_load(v, i % 3)
            assert hw != 0 and hw == v.id & a.mask
            seen.add(hw)
        a.force_rollover()
    assert 0 not in seen and a.rollovers >= 1


def test_bad_widths_and_cpus():
    with pytest.raises(ValueError, match="8 or 16"):
        VmidAllocator(12, 1)
    with pytest.raises(ValueError, match="more VMIDs than CPUs"):
        VmidAllocator(8, 255)


# ---- pinned VMIDs ------------------------------------------------------------------------------------------

def test_pin_refcount_and_limit():
    a = VmidAllocator(8, 2)
    assert a.max_pinned == 256 - 2 - 2
    x = a.new_context("x")
    assert a.pin(x) == 1 and x.pinned == 1 and a.nr_pinned == 1      # never ran: pin allocates
    assert a.pin(x) == 1 and x.pinned == 2 and a.nr_pinned == 1      # refcount only
    others = [a.new_context() for _ in range(a.max_pinned - 1)]
    assert all(a.pin(o) for o in others)
    assert a.nr_pinned == a.max_pinned
    extra = a.new_context("extra")
    assert a.pin(extra) == 0 and extra.pinned == 0                   # limit reached
    assert a.pin(x) == 1 and x.pinned == 3                           # already pinned: still fine
    a.unpin(x); a.unpin(x)
    assert a.nr_pinned == a.max_pinned and a.is_pinned_vmid(1)
    a.unpin(x)                                                        # last put clears the pinned bit
    assert a.nr_pinned == a.max_pinned - 1 and not a.is_pinned_vmid(1)
    with pytest.raises(ValueError, match="not pinned"):
        a.unpin(x)


def test_max_pins_and_busy_cpus_still_roll_over():
    """max_pinned = NUM - ncpus - 2 leaves one free index after a rollover with every CPU reserving one."""
    a = VmidAllocator(8, 3)
    pinned = [a.new_context() for _ in range(a.max_pinned)]
    for p in pinned:
        assert a.pin(p)
    runners = [a.new_context() for _ in range(3)]
    for cpu, r in enumerate(runners):
        assert a.vcpu_load(r, cpu) == 252 + cpu   # every CPU busy with its own VMID
    assert a.force_rollover() == 2             # 255 fills, the next allocation rolls over...
    assert a.map_bits() == set(range(1, 256))  # ...and finds exactly one free slot (255) after the flush
    hw = {a.hw_vmid(c) for c in pinned + runners}
    assert len(hw) == len(pinned) + 3 and 0 not in hw and 255 not in hw
    for cpu, r in enumerate(runners):
        assert a.vcpu_load(r, (cpu + 1) % 3) == 252 + cpu


def test_pinned_vmid_survives_rollovers_unloaded(dvm):
    ic, rec = dvm
    a = VmidAllocator(8, 1, interconnect=ic)
    p = a.new_context("p")
    a.vcpu_load(p, 0)                          # index 1, the one throwaways would take first
    a.vcpu_put(0)
    assert a.pin(p) == 1
    for _ in range(3):
        a.force_rollover()
    assert a.rollovers == 3 and len(rec.tlbis("ALLE1IS")) == 3
    assert a.vcpu_load(p, 0) == 1              # new_vmid: pinned -> keeps the index
    assert p.id == a.generation | 1
    a.unpin(p)
    a.vcpu_put(0)
    a.force_rollover()                         # bit no longer in pinned_map: the throwaway takes 1
    assert a.vcpu_load(p, 0) != 1


def test_pin_of_stale_context_allocates_current_id():
    a = VmidAllocator(8, 1)
    s = a.new_context("s")
    a.vcpu_load(s, 0)
    a.vcpu_put(0)
    a.force_rollover()                         # throwaway takes index 1 in generation 2
    assert s.id == 0x101 and not a.gen_match(s.id)
    hw = a.pin(s)
    assert hw == 2 and s.id == 0x202 and a.is_pinned_vmid(2)


def test_destroy_releases_pins():
    a = VmidAllocator(8, 1)
    v = a.new_context()
    a.pin(v); a.pin(v)
    a.destroy_context(v)
    assert a.nr_pinned == 0 and not a.pinned_vmids() and v.dead
    a.unpin(v)                                 # a late unpin from the driver is harmless
    with pytest.raises(ValueError, match="destroyed"):
        a.vcpu_load(v, 0)


# ---- the pinned-VMID RFC's split space and the restricted policy's reserved set ---------------------------

def test_split_pins_from_upper_half_and_frees_on_destroy(dvm):
    ic, rec = dvm
    a = VmidAllocator(8, 2, interconnect=ic, split=True)
    assert a.limit == 128 and a.max_pinned == 128
    changes = []
    a.vmid_listeners.append(lambda ctx, old, new: changes.append((ctx.name, old, new)))
    v, w = a.new_context("v"), a.new_context("w")
    assert a.vcpu_load(v, 0) == 1
    assert a.pin(v) == 0x80 and changes == [("v", 1, 0x80)]
    assert a.active[0] & a.mask == 0x80        # the loaded vCPU now runs with the pinned VMID
    for _ in range(3):
        a.force_rollover()
        assert max(a.map_bits() - {0x80}) < 128   # the rolling half never reaches the upper one
    assert a.vcpu_load(v, 1) == 0x80
    a.unpin(v)
    assert a.hw_vmid(v) == 0x80 and a.nr_pinned == 1   # held until the VM goes away (RFC patch 5/5)
    a.vcpu_put(0); a.vcpu_put(1)
    a.destroy_context(v)
    inv = rec.tlbis("VMALLS12E1IS")
    assert [op.vmid for op in inv] == [0x80]
    assert a.pin(w) == 0x80                    # reused only after that invalidation


def test_smmu_reserved_indices_never_handed_out():
    a = VmidAllocator(8, 2, smmu_reserved=16)
    assert a.limit == 240 and a.max_pinned == 240 - 2 - 2
    for r in range(20):                        # 1000 short-lived VMs: about 4 rollovers
        for i in range(50):
            assert 0 < a.vcpu_load(a.new_context(), i % 2) < 240
    assert a.rollovers >= 3


def test_trace_events():
    sink = ListSink()
    tr = Tracer("kvm_*", [sink])
    a = VmidAllocator(8, 1, tracer=tr)
    v = a.new_context("v")
    a.vcpu_load(v, 0, "v/0")
    a.pin(v)
    a.unpin(v)
    a.vcpu_put(0)
    a.force_rollover()
    load = sink.of("kvm_vcpu_load")[0]
    assert (load["ctx"], load["vcpu"], load["cpu"], load["vmid"], load["fast"]) == ("v", "v/0", 0, 1, False)
    alloc = sink.of("kvm_vmid_alloc")[0]
    assert (alloc["vmid"], alloc["id"], alloc["generation"], alloc["how"]) == (1, 0x101, 1, "new")
    assert [(r["vmid"], r["refcount"], r["nr_pinned"]) for r in sink.of("kvm_vmid_pin")] == [(1, 1, 1)]
    assert [(r["vmid"], r["refcount"], r["nr_pinned"]) for r in sink.of("kvm_vmid_unpin")] == [(1, 0, 0)]
    (roll,) = sink.of("kvm_vmid_rollover")
    assert roll["generation"] == 0x200 and roll["rollovers"] == 1 and roll["reserved"] == [0]


def test_rollover_ops_match_the_tlbi_decoder():
    """The hand-built host TLBIs equal what the TLBI decoder makes of the same encodings at EL2."""
    tlbi = pytest.importorskip("devmodel.tlbi")
    from devmodel.tlbi_types import DecodeContext
    from harness.host.vmid import vmalls12e1is
    assert tlbi.decode(4, 8, 3, 4, None, DecodeContext(el=2)) == ALLE1IS
    assert tlbi.decode(4, 8, 3, 6, None, DecodeContext(el=2, vmid=0x80)) == vmalls12e1is(0x80)
