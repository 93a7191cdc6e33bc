"""`sva-btm`: a guest shares its stage-1 page tables with the SMMU and relies on BTM (seed 000, seed 001).

Setup: `vms - 1` other VMs run on the host's CPUs (KVM only: they take VMIDs and CPU time), then the SVA VM
boots guest_fw/scenarios/sva_btm.c. Before it starts, the VMM binds its DMA test device to iommufd (after
KVM_DEV_VFIO_FILE_ADD), maps the VM's RAM in an IOAS and allocates the nest-parent HWPT (platform.py). The guest
writes a CD pointing at its own TTBR0_EL1 tables (ASID from TTBR0, ASET=0) and hands the CD table's IPA to the
VMM through the scenario port; the VMM does VIOMMU_ALLOC (VMID = the policy's `nested_vmid`), VDEVICE_ALLOC, a
nested HWPT_ALLOC from a stage-1 vSTE pointing at that CD table, and the attach: the host driver writes the
nested STE (guest CD table at IPA, host stage 2, S2VMID = the vIOMMU's VMID). SMMU: IDR0.BTM=1, the host driver
sets CR2.PTM=0 (the board says DVM reaches the SMMU), SMMUEN=1. With `stack="vsmmu"` the guest
(guest_fw/scenarios/sva_vsmmu.c) installs the same vSTE through its own vSMMU (harness/vmm.py), and a naive VMM
advertises BTM to it whatever the policy.

Each round the guest DMAs a page, repoints its PTE, issues TLBI VAE1IS + DSB ISH (no SMMU command), DMAs
again and reports what the device saw, then yields. While it is descheduled the host runs the other VMs; every
`rollover_every` yields a burst of short-lived VMs exhausts the VMID generation (`Kvm.force_rollover`:
throwaway contexts through `new_vmid`) and a few more short-lived VMs start in the new generation.

Nothing here decides the outcome: the TLBI carries the VMID KVM loaded for the vCPU in that slice, the SMMU's
IOTLB entries carry the STE's S2VMID, and the SMMU's BTM applies the broadcast only where they match.
"""
from __future__ import annotations

from typing import Any

from devmodel.trace import Tracer

from .base import Scenario
from .platform import ScenarioPlatform
from .result import ScenarioResult

__all__ = ["SvaBtm", "SvaRun", "run_sva"]

class _HostChurn:
    """Machine plugin: while the SVA vCPU is descheduled, the host runs its other VMs and starts short-lived
    ones; every `rollover_every` yields the short-lived burst exhausts the VMID generation."""

    def __init__(self, run: "SvaRun"):
        self.run = run
        self.pending = False
        self.yields = 0

    def before_run(self, machine: Any) -> None:
        self.run.slice_background()             # the other VMs were running before the SVA VM booted

    def slice_end(self, vcpu: Any) -> None:
        if not self.pending:
            return
        self.pending = False
        self.yields += 1
        r = self.run
        kvm = r.plat.kvm
        if r.rollover_every and self.yields % r.rollover_every == 0:
            kvm.force_rollover()
        for i in range(r.short_lived):
            vm = kvm.create_vm(f"short{self.yields}.{i}")
            kvm.vcpu_load(vm.vcpus[0], 0)
            kvm.destroy_vm(vm)
        r.slice_background()
        r.check_pins()


class SvaRun:
    """One SVA run (shared by sva-btm, no-btm-forwarding, kvm-ordering and the guest-SVA scenarios).

    `stack="port"`: guest_fw/scenarios/sva_btm.c; the VMM binds the device before the guest starts and does
    the nested attach through iommufd when the guest gives it its CD table through the port. `stack="vsmmu"`:
    guest_fw/scenarios/sva_vsmmu.c drives the vSMMU of `harness.vmm.setup_nested_vm`, which advertises BTM as
    `advertise_btm` says (`"host"`: whenever the host uses BTM, as a naive VMM would). `program`/`params`
    replace the guest program and its port parameters, `features` adds to the physical SMMU's, `vmm_kw` go to
    `setup_nested_vm` (vsmmu stack)."""

    def __init__(self, policy: str, vmid_bits: int, vms: int, *, btm: bool = True, forward: bool = False,
                 rounds: int = 6, rollover_every: int = 2, short_lived: int | None = None,
                 kvm_first: bool = True, tracer: Tracer | None = None, stack: str = "port",
                 advertise_btm: str = "pinned", program: str | None = None, params: list[int] | None = None,
                 features: dict | None = None, vmm_kw: dict | None = None):
        if stack not in ("port", "vsmmu"):
            raise ValueError(f"stack must be 'port' or 'vsmmu', not {stack!r}")
        plat = ScenarioPlatform(policy, vmid_bits, btm=btm, tracer=tracer, features=features)
        self.plat = plat
        self.stack = stack
        self.rounds = rounds
        self.rollover_every = rollover_every
        self.short_lived = vms + 2 if short_lived is None else short_lived
        self.background = [plat.kvm.create_vm(f"bg{i}") for i in range(vms - 1)]
        self.pin_changes = 0
        self._pins: dict[int, int] = {}
        params = [rounds, int(forward)] if params is None else params
        if stack == "vsmmu":
            self.vm = plat.add_vsmmu_guest("sva", program or "sva_vsmmu", params=params, kvm_first=kvm_first,
                                           advertise_btm=advertise_btm, **(vmm_kw or {}))
        else:
            self.vm = plat.add_guest("sva", program or "sva_btm", params=params, kvm_first=kvm_first)
        self.churn = _HostChurn(self)
        plat.machine.add_plugin(self.churn)
        plat.on_yield = self._on_yield          # type: ignore[method-assign]

    def _on_yield(self, name: str) -> None:
        self.churn.pending = True

    def slice_background(self) -> None:
        kvm = self.plat.kvm
        for vm in self.background:
            for v in vm.vcpus:
                kvm.vcpu_load(v, 0)
        for vm in self.background:
            for v in vm.vcpus:
                kvm.vcpu_put(v)

    def check_pins(self) -> None:
        """A pinned VMID must never change: compare every pinned grant with its context's VMID now."""
        vmids = self.plat.kvm.vmids
        for g in self.plat.policy.grants:
            ctx = g.pinned_ctx
            if ctx is None or ctx.dead:
                continue
            now = vmids.hw_vmid(ctx)
            last = self._pins.get(id(g), g.vmid)
            if now != last:
                self.pin_changes += 1
            self._pins[id(g)] = now

    def execute(self, res: ScenarioResult, timeout: float = 60.0) -> dict:
        plat = self.plat
        out = plat.run(timeout=timeout)
        self.check_pins()
        reps = plat.reports_of("sva")
        after = [r for r in reps if r["index"] % 2 == 1]
        before = [r for r in reps if r["index"] % 2 == 0]
        stale = sum(r["outcome"] == "stale" for r in after)
        bad = sum(r["outcome"] in ("fault", "other") for r in reps) + \
            sum(r["outcome"] != "fresh" for r in before)
        first_rep = next((r for r in after if r["outcome"] == "stale"), None)
        first = first_rep["index"] // 2 if first_rep else -1
        self.rollovers_before_stale = first_rep["rollovers"] if first_rep else 0
        port = plat.ports["sva"]
        dev = plat.devices.get("sva")
        vmid = dev.vmid if dev is not None else None
        invals = len(after)
        m = res.metrics
        m.update(stale_dma=stale, cross_vm_dma=sum(r["outcome"] == "other" for r in reps),
                 broadcast_invalidations=plat.smmu_broadcasts(), rollovers=plat.kvm.vmids.rollovers,
                 pinned_vmid_changes=self.pin_changes, rounds=invals, first_stale_round=first,
                 dma_faults=sum(r["outcome"] == "fault" for r in reps),
                 vm_exits_per_invalidation=(port.inv_traps / invals) if invals else 0.0)
        timeline = " ".join(f"{r['index'] // 2}:{r['vmid_cpu']:#x}/{_hex(r['vmid_ste'])}:{r['outcome'][0]}"
                            for r in after)
        res.note(f"nested domain VMID (STE.S2VMID) {vmid:#x}" if vmid is not None else "no nested domain")
        if timeline:
            res.note(f"rounds (round:TLBI VMID/STE VMID:fresh|stale): {timeline}")
        res.note(f"guest: {out.message}")
        self.bad = bad
        self.outcome = out
        return m


def _hex(v: int | None) -> str:
    return "-" if v is None else f"{v:#x}"


class SvaBtm(Scenario):
    name = "sva-btm"
    seed = "000, 001"
    summary = ("guest SVA with BTM: the guest's TLBI VAE1IS + DSB ISH must reach the SMMU's entries while "
               "other VMs force KVM VMID rollovers")
    vms_meaning = "VMs on the host (the SVA VM + others time-sliced with it)"
    default_vms = 3
    options = {"stack": (("port", "vsmmu"), "port",
                         "port: the guest's nested attach by hypercall; vsmmu: its own vSMMU, a VMM advertising BTM")}

    def _run(self, res: ScenarioResult, *, tracer: Tracer | None = None, rounds: int = 6,
             rollover_every: int = 2, stack: str = "port", **_: Any) -> None:
        # stack="vsmmu": the guest drives its vSMMU and a naive VMM advertises BTM whatever the VMID policy
        # (the guest then relies on BTM exactly as the port guest does)
        run = SvaRun(res.policy, res.vmid_bits, res.vms, rounds=rounds, rollover_every=rollover_every,
                     tracer=tracer, stack=stack, advertise_btm="host")
        if stack != "port":
            res.note(f"stack: {stack} (the VMM advertises BTM to the guest whatever the VMID policy)")
        run.execute(res)
        err = run.plat.attach_errors.get("sva")
        m = res.metrics
        if err:
            res.error = err
            res.ok = False
            res.verdict = "the nested attach failed: " + err
            return
        res.ok = m["stale_dma"] == 0 and run.bad == 0 and m["pinned_vmid_changes"] == 0 \
            and m["rounds"] == rounds and run.outcome.exit_code == 0
        if m["stale_dma"]:
            n = run.rollovers_before_stale
            when = f"from round {m['first_stale_round']}" + (f", after {n} VMID rollover(s)" if n else
                                                               ", before any rollover")
            res.verdict = (f"stale DMA {when}: the guest's broadcast TLBIs carry its KVM VMID, the SMMU's "
                           "entries another VMID")
        elif res.ok:
            res.verdict = f"every DMA after TLBI + DSB saw the new page across {m['rollovers']} rollover(s)"
        else:
            res.verdict = "the guest did not complete every round correctly"
