"""`vmid-alias`: a stage-2-only context and a nested context tagged with the same VMID (seed 003).

"Say you have one guest using DOMAIN_NESTED without PASID table, just DMA to IPA using VMID 0x8000. Now
another guest attaches a PASID table and obtains the same VMID from KVM. The stage-2 translation might use TLB
entries from the other guest." Both contexts create stage-2 TLB entries tagged {NS-EL1, VMID}.

Setup: VM B (SVA, nested: guest CD sharing its CPU tables, S2VMID = the policy's `nested_vmid`) and VM A, whose
device is on a stage-2-only domain (S2VMID = the policy's `s2_vmid`). Both run guest_fw/scenarios/vmid_alias.c,
so their buffer sits at the same IPA. The host assigns stage-2-only VFs (idle devices of other guests, SR-IOV:
the BTM review of seed 001 says "it should be pretty easy to reach 256 VMIDs in the SMMU") one by one until a VF's domain shares
a VMID with a live nested domain, or the SMMU (or KVM's pin limit) runs out of VMIDs; VM A's device gets the
last one (that VF's domain is freed and A's nest-parent HWPT attached directly through iommufd: the host
driver takes its VMID from the policy at that attach). Then A DMAs its buffer (the SMMU caches the stage-2
translation of that IPA), and B DMAs the same IPA through its own stage 1: with a shared tag the walk uses A's
cached stage-2 entry and B's device reads and writes VM A's memory. Both guests check what they see.

Host side (platform.py): both devices are bound to iommufd with a nest-parent HWPT before the guests start;
B's nested attach (VIOMMU_ALLOC, VDEVICE_ALLOC, nested HWPT_ALLOC from its vSTE, attach) happens when B hands
the VMM its CD table through the scenario port, and the VF sweep and A's attach right after.
"""
from __future__ import annotations

from typing import Any

from devmodel.trace import Tracer

from ..host.iommufd import IommufdError
from ..host.vmid_policy import PolicyError
from .base import Scenario
from .platform import ScenarioPlatform, errno_message
from .result import ScenarioResult

__all__ = ["VmidAlias"]


class VmidAlias(Scenario):
    name = "vmid-alias"
    seed = "003"
    summary = ("a private stage-2-only VMID equal to a nested domain's KVM VMID: cross-VM TLB hit and "
               "wrong-VM DMA")
    vms_meaning = "VMs (2: A with a stage-2-only device, B with a nested one; more are not used)"
    default_vms = 2

    def _run(self, res: ScenarioResult, *, tracer: Tracer | None = None, **_: Any) -> None:
        plat = ScenarioPlatform(res.policy, res.vmid_bits, btm=True, tracer=tracer, quantum=5_000)
        plat.add_guest("A", "vmid_alias", params=[0])
        plat.add_guest("B", "vmid_alias", params=[1])
        sweep: dict[str, Any] = {"assigned": 0, "stopped": ""}
        base_attach = plat.attach_nested

        def attach_b_then_assign_vfs(name: str, cd_ipa: int, s1cdmax: int = 0) -> int:
            st = base_attach(name, cd_ipa, s1cdmax)
            if st:
                plat.gate_value = 3
                return st
            nested = {g.vmid for g in plat.policy.grants if g.kind == "nested"}
            last = None
            while True:
                dom = object()                  # an idle VF's stage-2-only domain (finalised at its attach)
                try:
                    vmid = plat.policy.s2_vmid(dom)
                except PolicyError as e:
                    sweep["stopped"] = str(e)
                    break
                sweep["assigned"] += 1
                last = (dom, vmid)
                if vmid in nested:
                    sweep["stopped"] = f"VF domain {sweep['assigned']} got VMID {vmid:#x}, a nested domain's VMID"
                    break
            if last is None:
                plat.attach_errors["A"] = sweep["stopped"]
                plat.gate_value = 3
                return 0
            # A's device is the last VF: that VF's domain goes away, and A's nest-parent HWPT is attached
            # directly (stage 2 only) through iommufd; the host driver finalises it with the policy's s2_vmid
            plat.policy.release(last[0], last[1])
            try:
                plat.attach_s2("A")
            except IommufdError as e:
                plat.attach_errors["A"] = errno_message(e)
                plat.gate_value = 3
                return 0
            plat.gate_value = 1
            return 0

        plat.attach_nested = attach_b_then_assign_vfs     # type: ignore[method-assign]
        out = plat.run()
        ra = {r["index"]: r for r in plat.reports_of("A")}
        rb = {r["index"]: r for r in plat.reports_of("B")}
        err = plat.attach_errors.get("B") or plat.attach_errors.get("A")
        da, db = plat.devices["A"], plat.devices["B"]
        cross_read = int(rb.get(0, {}).get("outcome") == "other" and rb[0]["value"] == ra.get(0, {}).get("value"))
        cross_write = int(ra.get(1, {}).get("outcome") == "other")
        m = res.metrics
        m.update(cross_vm_dma=cross_read + cross_write, cross_vm_reads=cross_read, cross_vm_writes=cross_write,
                 broadcast_invalidations=plat.smmu_broadcasts(), rollovers=plat.kvm.vmids.rollovers,
                 s2_domains_assigned=sweep["assigned"], shared_vmid=int(da.vmid is not None and da.vmid == db.vmid),
                 policy_aliases=len(plat.policy.aliases()))
        res.note(f"B nested S2VMID {db.vmid:#x}" if db.vmid is not None else "B has no nested STE")
        res.note(f"{sweep['assigned']} stage-2-only VF domain(s) assigned; stopped: {sweep['stopped']}")
        if da.vmid is not None:
            res.note(f"A's device S2VMID {da.vmid:#x}")
        for who, reps in (("A", ra), ("B", rb)):
            for i, r in sorted(reps.items()):
                res.note(f"{who} report {i}: {r['outcome']} (value {r['value']:#x})")
        res.note(f"guests: {out.message}")
        if err:
            res.error = err
        complete = len(ra) == 2 and len(rb) == 2
        res.ok = complete and m["cross_vm_dma"] == 0 and all(r["outcome"] == "fresh" for r in (*ra.values(),
                                                                                             *rb.values()))
        if m["cross_vm_dma"]:
            res.verdict = (f"VMID {db.vmid:#x} tags both A's stage-2-only context and B's nested context: B's "
                           f"device read{' and wrote' if cross_write else ''} VM A's memory")
        elif res.ok:
            res.verdict = "no stage-2-only context ever shared a VMID with the nested one: no cross-VM DMA"
        else:
            res.verdict = "the guests did not complete (see notes)"
