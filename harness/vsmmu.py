"""The VMM's guest-visible SMMUv3 (a vSMMU in the VM's IPA space), accelerated through iommufd as QEMU's
`hw/arm/smmuv3-accel.c` does.

The programming model is the devmodel SMMUv3 itself: `VSmmu` subclasses `devmodel.smmuv3.device.SMMUv3` on the
VM's IPA bus, so the register table (`regs.py` + `SmmuFeatures`), the write locks, the CR0/CR0ACK and GBPA
handshakes, GERROR, the wrapping queues (`queue.py`), the command decoder and its CERROR_ILL checks
(`commands.py`), CMD_SYNC completion (MSI write into guest RAM, or CONS) and the event-queue writer are the
model's code. The VMM builds on the model's public extension points only (`devmodel/smmuv3/hooks.py`): it
has no translation backend (`core=None`: the guest's device DMA goes through the physical SMMU), replaces
entries of the command handler table, and observes SMMUEN, GBPA, STE invalidation, the end of each CMDQ pass
and EVTQ_PROD reads:

* guest `CFGI_STE` / `CFGI_STE_RANGE` (and SMMUEN/GBPA changes) -> read the guest STE from its stream table in
  guest RAM (IPA: the model's `find_ste` over the VM's IPA bus) -> for an assigned device: abort/bypass ->
  attach the pre-allocated abort/bypass nested HWPT; stage 1 -> nested `HWPT_ALLOC` with the vSTE words 0-1 +
  attach, then free the previous nested HWPT (`smmuv3_accel_install_ste`). The vDEVICE (vSID -> SID) is
  allocated when the device is assigned (`attach_device`). A vSTE the kernel refuses (EIO: fields outside the
  allowed set, a bad Config) or that is ILLEGAL for this vSMMU is reported to the guest as C_BAD_STE in its
  event queue (where a real SMMU would report it at the next transaction) and the device is left on the abort
  HWPT.
* guest `TLBI_NH_ALL/ASID/VA/VAA`, `TLBI_NSNH_ALL`, `CFGI_CD`, `CFGI_CD_ALL`, `ATC_INV` -> `HWPT_INVALIDATE` on
  the vIOMMU with the guest's 16 command bytes, unmodified: the kernel rewrites the VMID and maps vSIDs
  (`smmuv3_accel_issue_inv_cmd`, one command per call). The VMM does not filter vSIDs itself (QEMU skips
  commands for vSIDs without a vDEVICE): the kernel is the authority, and a command it refuses (EIO, e.g. a
  vSID the VM does not own) stops the guest's queue with CMDQ_CONS.ERR = CERROR_ILL at that command and
  GERROR.CMDQ_ERR, as the spec says for an illegal command. With `batch=True` consecutive invalidations are
  sent in one call at the next CMD_SYNC (or any other command, or the end of the kick), as Linux batches
  (`arm_smmu_cmdq_batch`); a refusal then rewinds CMDQ_CONS to the refused entry.
* `CMD_SYNC` completes after everything before it was issued (the kernel's HWPT_INVALIDATE waits for its own
  CMD_SYNC on the physical queue), by the model's MSI write to guest memory or the CONS update.
* host events for the device: the vIOMMU's vEVENTQ (events already carry the vSID) is read when the guest reads
  EVTQ_PROD and at the end of each of the VM's vCPU slices (a machine plugin), and every record goes into the
  guest's event queue through the model's writer (overflow, MSI/IRQ as the model does).
* recoverable faults (when the VMM gave the vSMMU a fault object: `setup_nested_vm(iopf=True)`): the vSMMU
  reads the fault fd (`harness.fault_forward.FaultForwarder`) when the guest reads EVTQ_PROD or PRIQ_PROD and
  at the end of the VM's vCPU slices, and gives each group to the guest as the SMMU would have:
  - a stall (the device's stream has no ATS: its vSTE EATS=0b00) -> an event record in the guest EVTQ with
    Stall=1 and a vSTAG this vSMMU allocates (unique among the vSID's outstanding stalls), type F_TRANSLATION
    (the fault record carries no event type), RnW/InD/PnU from the access, SSV/SSID from the PASID. A full
    guest EVTQ holds it back (no OVFLG) until there is room, as the SMMU holds a stall record; a disabled
    EVTQ or SMMU terminates it (Invalid). The guest's CMD_RESUME (vSID, vSTAG) becomes the page response:
    retry -> SUCCESS, abort or RAZ/WI termination -> INVALID (the uAPI has no RAZ/WI); CMD_STALL_TERM answers
    all of the vSID's stalls INVALID, SMMUEN 1 -> 0 all of them.
  - a page request group (the stream uses ATS: vSTE EATS=0b01) -> one PRI queue entry per fault, in the
    guest's PRI queue, written by the model's `page_request` (same PRG index and Last; an entry the guest
    queue cannot take is answered by the model itself, as an SMMU does, and that answer goes to the host).
    The guest's CMD_PRI_RESP (vSID, SSID, PRG index) becomes the page response: Success -> SUCCESS, Invalid
    Request or Response Failure -> INVALID.
  A CMD_RESUME or CMD_PRI_RESP that names no fault this VM was given (unknown vSID, vSTAG or PRG index,
  another VM's, or already answered) is ignored, as the SMMU ignores a RESUME of no stall (`resume_ignored`,
  `pri_resp_ignored`): the fault fd's cookies never reach the guest.
* commands the vSMMU does not offer (stage 2, EL2; PRI, ATS and stalls unless the VMM enabled them: IDR0 says
  S2P=0, Hyp=0, PRI=0, ATS=0, STALL_MODEL=1 by default) fail with CERROR_ILL in the model's own
  `commands.check`; PREFETCH_* are accepted and ignored.

Accounting (`stats`, `cost()`): every guest MMIO access to the vSMMU is a trap to the VMM (`vm_exits`: the page
is emulated, so loads and stores both exit); `work_exits` counts the stores that make the VMM do something
(CR0, GBPA, IRQ_CTRL, GERRORN, CMDQ_PROD); per guest invalidation command the VMM counts `host_calls`
(HWPT_INVALIDATE ioctls) and `host_cmds` (commands, CMD_SYNCs included, the host driver put on the physical
queue for them); per fault `faults_delivered`, `fault_reads` / `fault_writes` (fault fd reads that returned
records, writes), `page_responses`.

Guest input never raises into the harness: iommufd/driver errors become CERRORs or events, and anything else
(a bug) is caught at the MMIO boundary, recorded in `internal_errors`, traced (`vsmmu_internal_error`), and
turns into GERROR.CMDQ_ERR with CERROR_ABT so the guest sees a failure too. Tests assert `internal_errors` is
empty.

Not modelled: 2-level guest stream tables are read (the model's walker), but hot-plug, the guest's wired
interrupts (no GIC: the guest polls or uses MSIs into its RAM), CMDQV, nested vSMMUs for several assigned
devices behind different physical SMMUs, the guest's PRIQ/EVTQ MSIs for injected faults beyond what the model's
writers do.
"""
from __future__ import annotations

import errno as _errno
import traceback
from collections import Counter
from dataclasses import dataclass
from typing import Any

from devmodel.smmuv3 import commands as cmds
from devmodel.smmuv3 import events as evmod
from devmodel.smmuv3 import ste as stemod
from devmodel.smmuv3.ats import PageRequest, PrgResponse
from devmodel.smmuv3.device import MMIO_SIZE, SMMUv3
from devmodel.smmuv3.fault import EventType, Fault, FaultClass
from devmodel.smmuv3.hooks import CommandHandler
from devmodel.smmuv3.regs import SmmuFeatures
from devmodel.smmuv3.stall import Resume, resume_action
from devmodel.trace import NULL_TRACER, Tracer, define

from .fault_forward import Delivery, FaultForwarder, ForwardedGroup
from .host.iopf import IOMMU_FAULT_PERM_EXEC, IOMMU_FAULT_PERM_PRIV, IOMMU_FAULT_PERM_READ, IOMMU_FAULT_PERM_WRITE

__all__ = ["VSmmu", "VSmmuDevice", "vsmmu_features", "VSMMU_IPA", "VSMMU_SIZE", "FORWARDED", "WORK_REGS"]

VSMMU_IPA = 0x0905_0000
VSMMU_SIZE = MMIO_SIZE
_M64 = (1 << 64) - 1

#: guest commands the VMM hands to IOMMU_HWPT_INVALIDATE (the kernel converts or refuses them)
FORWARDED = frozenset({"TLBI_NH_ALL", "TLBI_NH_ASID", "TLBI_NH_VA", "TLBI_NH_VAA", "TLBI_NSNH_ALL", "CFGI_CD",
                       "CFGI_CD_ALL", "ATC_INV"})
#: registers whose guest stores make the VMM work (the model acts on them when they are written)
WORK_REGS = frozenset({"CR0", "GBPA", "IRQ_CTRL", "GERRORN", "CMDQ_PROD"})

define("vsmmu_cmd", ("dev", "opcode", "vsid", "action", "host_cmds", "errno"),
       "a guest command the VMM handled (action: forwarded | batched | installed | local | refused)")
define("vsmmu_install_ste", ("dev", "vsid", "sid", "config", "hwpt", "how"),
       "guest STE installed for an assigned device (how: abort | bypass | translate | gbpa-abort | gbpa-bypass "
       "| refused)")
define("vsmmu_refused", ("dev", "what", "vsid", "errno", "reason"),
       "the host refused a guest STE or command; the guest gets C_BAD_STE or CERROR_ILL")
define("vsmmu_event", ("dev", "type", "vsid", "written"), "a host event (vEVENTQ) put into the guest's EVTQ")
define("vsmmu_internal_error", ("dev", "where", "error"), "a VMM bug caught at the MMIO boundary")
define("vsmmu_fault", ("dev", "what", "vsid", "tag", "n", "outcome"),
       "a recoverable fault given to the guest (what: stall | pri) or answered by it (what: resume | pri_resp; "
       "outcome success | invalid | ignored)")


def vsmmu_features(host: Any = None, *, btm: bool = False, ats: bool = False, iopf: bool = False,
                   httu: bool = False, **overrides: Any) -> SmmuFeatures:
    """The ID registers the guest sees: stage 1 only (the host owns stage 2), no Hyp, MSIs, linear and 2-level
    stream tables; OAS, granules, RIL and SSIDSIZE no larger than the host's (`smmuv3_accel_check_hw_compatible`).
    `host` is the driver's `SmmuCaps` (or None for defaults). `btm` is what IDR0.BTM tells the guest: only
    true when its CPUs' TLBIs really reach the physical SMMU with the vIOMMU's VMID (host BTM in use and the
    VM's pinned KVM VMID shared). What the host allows, when the VMM offers it: `ats` IDR0.ATS; `iopf` (the
    VMM has a fault object) the host's IDR0.STALL_MODEL and, with ATS, IDR0.PRI (a PRI queue of up to 2^8
    entries); `httu` the host's IDR0.HTTU. Otherwise no ATS/PRI/HTTU and terminate-only stalls."""
    kw: dict[str, Any] = dict(s1p=True, s2p=False, hyp=False, ats=False, pri=False, stall_model=1, msi=True,
                              sev=True, btm=btm, httu=0, vmid16=True, asid16=True, cd2l=True, st_level_2=True,
                              sidsize=16, gbpa_abort=False)
    if host is not None:
        kw.update(oas=min(host.oas, 48), ril=bool(host.ril), ssidsize=min(host.ssid_bits, 20),
                  gran4k=4096 in host.granules, gran16k=16384 in host.granules,
                  gran64k=65536 in host.granules, asid16=host.asid_bits == 16, cd2l=bool(host.cd2l))
        kw["ats"] = ats and host.ats
        if iopf:
            kw["stall_model"] = host.stall_model
            kw.update(pri=kw["ats"] and host.pri, priqs=min(host.priq_log2, 8) if kw["ats"] and host.pri else 0)
        if httu:
            kw["httu"] = host.httu
    kw.update(overrides)
    return SmmuFeatures(**kw)


@dataclass
class VSmmuDevice:
    """An assigned device behind the vSMMU: its vSID, iommufd dev_id, vDEVICE, current HWPT."""
    vsid: int
    dev_id: int
    sid: int
    vdevice_id: int
    hwpt: int = 0                 # attached HWPT id
    nested: int = 0               # the translate nested HWPT this vSMMU allocated (0: none)
    how: str = ""
    ats: bool = False             # the guest's vSTE has EATS=0b01: the device uses ATS (faults come as PRI)


class _GuestFunction:
    """The vSMMU's view of an assigned PCIe function (the model's `AtsEndpoint` for a vSID): the guest's
    CMD_PRI_RESP (and the model's own answers for page requests the guest queue could not take) arrive here.
    ATC_INV is forwarded to the host, so `atc_invalidate` is never called for it."""

    def __init__(self, vsmmu: "VSmmu", vsid: int):
        self.vsmmu, self.vsid = vsmmu, vsid

    def atc_invalidate(self, ssid: int | None, lo: int, hi: int, global_: bool) -> bool:
        return True

    def pri_response(self, ssid: int | None, grpid: int, code: PrgResponse) -> None:
        self.vsmmu.pri_answered(self.vsid, ssid, grpid, code)


class VSmmu(SMMUv3):
    """A guest-visible SMMUv3 for `vm`, backed by vIOMMU `viommu_id` of iommufd context `ictx`.

    `veventq`: the vIOMMU's vEVENTQ object (`Iommufd.veventq_alloc(...)[1]`), or None (no event forwarding).
    `batch`: send consecutive invalidations in one HWPT_INVALIDATE (default: one per command, as QEMU).
    `mask_ste`: strip vSTE bits outside the nesting-allowed set before HWPT_ALLOC, as QEMU does with
    STE0_MASK/STE1_MASK (default False: pass the guest's words and let the kernel refuse them).
    `fault_queue` / `fault_id`: the iommufd fault object its nested HWPTs are allocated with (None: none)."""

    def __init__(self, vm: Any, ictx: Any, viommu_id: int, *, veventq: Any = None,
                 features: SmmuFeatures | None = None, tracer: Tracer = NULL_TRACER, name: str | None = None,
                 batch: bool = False, mask_ste: bool = False, fault_queue: Any = None, fault_id: int = 0):
        self.vm = vm
        self.ictx = ictx
        self.viommu_id = viommu_id
        self.veventq = veventq
        self.batch = batch
        self.mask_ste = mask_ste
        self.devices: dict[int, VSmmuDevice] = {}
        self.vmm: Counter[str] = Counter()          # VMM-side accounting (see module docstring)
        self.internal_errors: list[str] = []
        self.refusals: list[tuple[str, int, int, str]] = []   # (what, vsid, errno, reason)
        self._pending: list[tuple[int, bytes, cmds.Command]] = []   # batch: (cons, raw, cmd)
        self._abort_hwpt = 0
        self._bypass_hwpt = 0
        self._in_mmio = False
        self.fault_id = fault_id if fault_queue is not None else 0
        self.forwarder = None if fault_queue is None else FaultForwarder(
            fault_queue, self._vsid_of_dev, stats=self.vmm, prefix="fault_")
        self._delivering: tuple | None = None            # the PRI group being written into the guest PRIQ
        self._answered: PrgResponse | None = None
        super().__init__(vm.ipa, features or vsmmu_features(), tracer=tracer,
                         name=name or f"{getattr(vm, 'name', 'vm')}.vsmmu", irq=None,
                         core=None)        # no translation in the VMM: DMA goes through the physical SMMU
        for n in cmds.OPCODES:
            self.set_handler(n, self._forward if n in FORWARDED else self._local(n, self.handler(n)))
        self.set_handler("RESUME", self._local("RESUME", self._guest_resume))
        self.set_handler("STALL_TERM", self._local("STALL_TERM", self._guest_stall_term))
        self.hooks.smmuen.append(self._smmuen_changed)
        self.hooks.gbpa.append(self._gbpa_updated)
        self.hooks.ste_invalidated.append(self._ste_invalidated)
        self.hooks.cmdq_pass_end.append(self._pass_end)
        self.hooks.evtq_prod_read.append(self.poll_events)
        self.hooks.evtq_prod_read.append(self.poll_faults)
        self.hooks.priq_prod_read.append(self.poll_faults)    # the fd is read before the guest sees PROD

    @property
    def stats_vmm(self) -> dict[str, int]:
        return dict(self.vmm)

    # -- MMIO boundary: exits, accounting, never an exception into the harness ------------------------------------
    def read(self, offset: int, size: int) -> int:
        self.vmm["vm_exits"] += 1
        self.vmm["mmio_reads"] += 1
        if self._in_mmio:                       # re-entry (cannot happen from a guest); keep it harmless
            return super().read(offset, size)
        self._in_mmio = True
        try:
            return super().read(offset, size)
        except Exception as e:                  # noqa: BLE001 - the boundary: record, report, continue
            self._internal("read", e)
            return 0
        finally:
            self._in_mmio = False

    def write(self, offset: int, value: int, size: int) -> None:
        self.vmm["vm_exits"] += 1
        self.vmm["mmio_writes"] += 1
        reg = self.reg_at(offset, size)
        if reg is not None and reg.name in WORK_REGS:
            self.vmm["work_exits"] += 1
            if reg.name == "CMDQ_PROD":
                self.vmm["cmdq_kicks"] += 1
        self._in_mmio = True
        try:
            super().write(offset, value, size)
        except Exception as e:                  # noqa: BLE001 - the boundary: record, report, continue
            self._internal("write", e)
        finally:
            self._in_mmio = False

    def _internal(self, where: str, e: BaseException) -> None:
        self.internal_errors.append(f"{where}: {e!r}\n{traceback.format_exc()}")
        self.vmm["internal_errors"] += 1
        if self.traced("vsmmu_internal_error"):
            self.tracer.emit("vsmmu_internal_error", dev=self.name, where=where, error=repr(e))
        self.regs.set_field("CMDQ_CONS", "ERR", cmds.CERROR_ABT)
        self.raise_gerror("CMDQ_ERR")

    # -- the model's hooks: configuration changes ------------------------------------------------------------------
    def _smmuen_changed(self, enabled: bool) -> None:
        if not enabled and self.forwarder is not None:      # the SMMU holds no transaction once disabled
            self.forwarder.respond_all(None, False, lambda tag: tag[0] == "stall")
        self.install_all("smmuen")

    def _gbpa_updated(self, old: int, new: int) -> None:
        if not self.field("CR0ACK", "SMMUEN") and new != old:
            self.install_all("gbpa")

    def _ste_invalidated(self, first: int, last: int) -> None:
        if first == last:                        # CFGI_STE
            self.install(first, "cfgi_ste")
            return
        for vsid in sorted(self.devices):        # CFGI_STE_RANGE / CFGI_ALL: the assigned devices in range
            if first <= vsid <= last:
                self.install(vsid, "cfgi_ste_range")

    # -- command handlers ------------------------------------------------------------------------------------------
    def _forward(self, cmd: cmds.Command) -> int:
        """Guest invalidations: HWPT_INVALIDATE now, or at the next other command / end of the kick (batch)."""
        self.vmm["guest_cmds"] += 1
        self.vmm["guest_invalidations"] += 1
        entry = (self.cmdq.state().cons, cmd.to_bytes(), cmd)
        if self.batch:
            self._pending.append(entry)
            self._trace_cmd(cmd, "batched", 0, 0)
            return cmds.CERROR_NONE
        return self._invalidate([entry])

    def _local(self, name: str, model: CommandHandler) -> CommandHandler:
        """Commands the VMM completes itself with the model's handler (CFGI_STE* reach `install` through the
        ste_invalidated hook, CMD_SYNC completes in guest memory), after any batched invalidations."""
        action = "installed" if name in ("CFGI_STE", "CFGI_STE_RANGE") else "local"

        def run(cmd: cmds.Command) -> int:
            self.vmm["guest_cmds"] += 1
            if self._pending:                    # keep the guest's order: earlier invalidations go first
                err = self._flush(at_sync=True)
                if err:
                    return err
            err = model(cmd)
            self._trace_cmd(cmd, action, 0, 0)
            return err
        return run

    def _pass_end(self) -> None:
        if self._pending:
            self._flush(at_sync=False)

    def _invalidate(self, entries: list[tuple[int, bytes, cmds.Command]]) -> int:
        """One HWPT_INVALIDATE for `entries`; on refusal CMDQ_CONS is left at the refused entry."""
        drv = self.ictx.driver
        before = drv.stats["cmds"] + drv.stats["syncs"]
        self.vmm["host_calls"] += 1
        err_no, reason, done = 0, "", len(entries)
        try:
            done = self.ictx.hwpt_invalidate(self.viommu_id, [raw for _c, raw, _cmd in entries])
        except OSError as e:                     # IommufdError / SmmuDriverError: errno carried
            err_no, reason = e.errno or _errno.EIO, e.strerror or str(e)
            done = getattr(e, "entry_num", None) or 0
        host = drv.stats["cmds"] + drv.stats["syncs"] - before
        self.vmm["host_cmds"] += host
        for i, (_c, _raw, cmd) in enumerate(entries[:done]):
            self._trace_cmd(cmd, "forwarded", host if i == 0 else 0, 0)
        if not err_no:
            return cmds.CERROR_NONE
        cons, _raw, cmd = entries[min(done, len(entries) - 1)]
        self._refused("command", cmd.sid if cmd.name in ("CFGI_CD", "CFGI_CD_ALL", "ATC_INV") else -1,
                      err_no, f"{cmd.name}: {reason}")
        self._trace_cmd(cmd, "refused", 0, err_no)
        self.cmdq.set_cons(cons)
        return cmds.CERROR_ILL

    def _flush(self, at_sync: bool) -> int:
        todo, self._pending = self._pending, []
        err = self._invalidate(todo)
        if err and not at_sync:
            self.command_error(err, "batch", self.cmdq.state().cons)
        return err

    def _trace_cmd(self, cmd: cmds.Command, action: str, host_cmds: int, err: int) -> None:
        if self.traced("vsmmu_cmd"):
            vsid = cmd.sid if cmd.name in ("CFGI_STE", "CFGI_CD", "CFGI_CD_ALL", "ATC_INV") else -1
            self.tracer.emit("vsmmu_cmd", dev=self.name, opcode=cmd.name, vsid=vsid, action=action,
                             host_cmds=host_cmds, errno=err)

    def _refused(self, what: str, vsid: int, err: int, reason: str) -> None:
        self.refusals.append((what, vsid, err, reason))
        self.vmm[f"refused_{what}"] += 1
        if self.traced("vsmmu_refused"):
            self.tracer.emit("vsmmu_refused", dev=self.name, what=what, vsid=vsid, errno=err, reason=reason)

    # -- devices and STEs ----------------------------------------------------------------------------------------
    def attach_device(self, vsid: int, dev_id: int) -> VSmmuDevice:
        """Assign the bound iommufd device `dev_id` to the guest as `vsid` (IOMMU_VDEVICE_ALLOC), allocating
        the vIOMMU's abort/bypass nested HWPTs on first use, and install what the guest's state says."""
        if vsid in self.devices:
            raise ValueError(f"{self.name}: vSID {vsid:#x} is already assigned")
        vdev = self.ictx.vdevice_alloc(self.viommu_id, dev_id, vsid)
        if not self._abort_hwpt:
            self._abort_hwpt = self._nested_alloc(dev_id, (1 | (stemod.CONFIG_ABORT << 1), 0))
            self._bypass_hwpt = self._nested_alloc(dev_id, (1 | (stemod.CONFIG_BYPASS << 1), 0))
        sid = self.ictx.devices[dev_id].sid
        d = VSmmuDevice(vsid, dev_id, sid, vdev)
        self.devices[vsid] = d
        self.attach_endpoint(vsid, _GuestFunction(self, vsid))
        self.install(vsid, "attach")
        return d

    def _nested_alloc(self, dev_id: int, words: tuple[int, int]) -> int:
        """A nested HWPT on the vIOMMU from vSTE words 0-1, with the fault object when there is one."""
        from harness.host.iommufd import IOMMU_HWPT_DATA_ARM_SMMUV3, IOMMU_HWPT_FAULT_ID_VALID
        flags = IOMMU_HWPT_FAULT_ID_VALID if self.fault_id else 0
        return self.ictx.hwpt_alloc(dev_id, self.viommu_id, flags=flags, data_type=IOMMU_HWPT_DATA_ARM_SMMUV3,
                                    data=words, fault_id=self.fault_id)

    def install_all(self, why: str) -> None:
        for vsid in sorted(self.devices):
            self.install(vsid, why)

    def install(self, vsid: int, why: str = "") -> str:
        """`smmuv3_accel_install_ste`: make the host follow the guest's STE for `vsid`. Returns how."""
        d = self.devices.get(vsid)
        if d is None:
            self.vmm["cfgi_ste_unbacked"] += 1        # no assigned device there: nothing in the host to change
            return "none"
        new_nested = 0
        cfg = -1
        if not self.field("CR0ACK", "SMMUEN"):
            abort = bool(self.field("GBPA", "ABORT"))
            hwpt, how = (self._abort_hwpt, "gbpa-abort") if abort else (self._bypass_hwpt, "gbpa-bypass")
        else:
            hwpt, how, new_nested, cfg = self._from_guest_ste(d)
        if not self._attach(d, hwpt, new_nested):
            hwpt, how = self._abort_hwpt, "refused"
            self._attach(d, hwpt, 0)
        d.how = how
        self.vmm[f"ste_{how}"] += 1
        if self.traced("vsmmu_install_ste"):
            self.tracer.emit("vsmmu_install_ste", dev=self.name, vsid=vsid, sid=d.sid, config=cfg, hwpt=hwpt,
                             how=how)
        return how

    def _from_guest_ste(self, d: VSmmuDevice) -> tuple[int, str, int, int]:
        """(hwpt, how, newly allocated nested hwpt or 0, config) for the guest's current STE of `d`."""
        look = self.find_ste(d.vsid)
        if isinstance(look, Fault):
            self.record_fault(Fault(look.type, sid=d.vsid, ipa=look.ipa, reason=f"VMM: {look.reason}"))
            return self._abort_hwpt, "abort", 0, -1
        ste = look.ste
        cfg = ste.config if ste.v else -1
        if not ste.v or ste.config < stemod.CONFIG_BYPASS:
            return self._abort_hwpt, "abort", 0, cfg
        bad = stemod.validate(ste, self.features, d.vsid)
        if bad is not None:                      # ILLEGAL for this vSMMU (e.g. stage 2 with IDR0.S2P=0)
            self._refused("ste", d.vsid, _errno.EINVAL, bad.reason)
            self.record_fault(Fault(EventType.C_BAD_STE, sid=d.vsid, reason=f"VMM: {bad.reason}"))
            return self._abort_hwpt, "refused", 0, cfg
        if ste.config == stemod.CONFIG_BYPASS:
            return self._bypass_hwpt, "bypass", 0, cfg
        w0, w1 = ste.raw & _M64, (ste.raw >> 64) & _M64
        if self.mask_ste:
            from harness.host.iommufd import NESTING_ALLOWED
            w0, w1 = w0 & NESTING_ALLOWED[0], w1 & NESTING_ALLOWED[1]
        try:
            hwpt = self._nested_alloc(d.dev_id, (w0, w1))
        except OSError as e:
            self._refused("ste", d.vsid, e.errno or _errno.EIO, e.strerror or str(e))
            self.record_fault(Fault(EventType.C_BAD_STE, sid=d.vsid, reason=f"host refused the vSTE: {e.strerror}"))
            return self._abort_hwpt, "refused", 0, cfg
        d.ats = ste.eats == 1
        return hwpt, "translate", hwpt, cfg

    def _attach(self, d: VSmmuDevice, hwpt: int, new_nested: int) -> bool:
        try:
            self.ictx.device_attach(d.dev_id, hwpt)
        except OSError as e:
            self._refused("attach", d.vsid, e.errno or _errno.EIO, e.strerror or str(e))
            if new_nested:
                self._destroy(new_nested)
            return False
        old, d.hwpt = d.nested, hwpt
        d.nested = new_nested
        if old and old != new_nested:
            self._destroy(old)                   # free the previous translate HWPT (QEMU does the same)
        return True

    def _destroy(self, hwpt: int) -> None:
        try:
            self.ictx.destroy(hwpt)
        except OSError as e:
            self._refused("destroy", -1, e.errno or _errno.EIO, e.strerror or str(e))

    # -- events ------------------------------------------------------------------------------------------------------
    def poll_events(self) -> int:
        """Move the vEVENTQ's records into the guest's event queue; returns how many were written."""
        q = self.veventq
        if q is None:
            return 0
        n = 0
        for ve in q.read():
            if ve.lost:
                self.vmm["vevents_lost"] += 1
                continue
            ev = ve.event
            written = self.write_event(ev)
            self.vmm["events_injected" if written else "events_dropped"] += 1
            n += int(written)
            if self.traced("vsmmu_event"):
                self.tracer.emit("vsmmu_event", dev=self.name, type=ev.name, vsid=ev.sid, written=int(written))
        return n

    # machine plugin: events and faults are looked at when one of this VM's vCPUs stops running
    def slice_end(self, vcpu: Any) -> None:
        if getattr(vcpu, "vm", None) is self.vm:
            try:
                self.poll_events()
                self.poll_faults()
            except Exception as e:               # noqa: BLE001 - never into the scheduler
                self._internal("slice_end", e)

    # -- recoverable faults (module docstring) ------------------------------------------------------------------
    def _vsid_of_dev(self, dev_id: int) -> int | None:
        return next((d.vsid for d in self.devices.values() if d.dev_id == dev_id), None)

    def poll_faults(self) -> int:
        """Give the guest what the fault object holds (and what waited for room); returns groups delivered."""
        if self.forwarder is None:
            return 0
        return self.forwarder.poll(self._deliver)

    def _deliver(self, g: ForwardedGroup) -> Delivery:
        d = self.devices.get(g.endpoint)
        if d is None:
            return Delivery.REFUSE
        out = self._deliver_pri(d, g) if d.ats else self._deliver_stall(d, g)
        if out.kind in ("tag", "answered"):
            self.vmm["faults_delivered"] += 1
        return out

    def _deliver_stall(self, d: VSmmuDevice, g: ForwardedGroup) -> Delivery:
        """A stall -> an event record with Stall=1 and a vSTAG in the guest's EVTQ (module docstring)."""
        if self.features.stall_model == 1 or not self.field("CR0ACK", "SMMUEN") or \
                not self.field("CR0ACK", "EVTQEN"):
            self._trace_fault("stall", d.vsid, -1, 1, "terminated")
            return Delivery.REFUSE
        if self.evtq.state().full:
            self.vmm["stalls_held"] += 1
            return Delivery.LATER
        vstag = next(t for t in range(0x10000) if not self.forwarder.given(d.vsid, ("stall", t)))
        r = g.last
        ev = evmod.Event(type=int(EventType.F_TRANSLATION), sid=d.vsid, ssv=int(r.pasid_valid),
                         ssid=r.pasid if r.pasid_valid else 0, stag=vstag, stall=1,
                         rnw=int(not r.perm & IOMMU_FAULT_PERM_WRITE), ind=int(bool(r.perm & IOMMU_FAULT_PERM_EXEC)),
                         pnu=int(bool(r.perm & IOMMU_FAULT_PERM_PRIV)), class_=int(FaultClass.IN), input_addr=r.addr)
        if not self.write_event(ev):
            self._trace_fault("stall", d.vsid, vstag, 1, "lost")
            return Delivery.REFUSE
        self.vmm["stalls_delivered"] += 1
        self._trace_fault("stall", d.vsid, vstag, 1, "delivered")
        return Delivery.tag(("stall", vstag))

    def _deliver_pri(self, d: VSmmuDevice, g: ForwardedGroup) -> Delivery:
        """A page request group -> the guest's PRI queue, one entry per fault (module docstring)."""
        last = g.last
        ssid = last.pasid if last.pasid_valid else None
        tag = ("pri", ssid, last.grpid & 0x1FF)
        self._delivering, self._answered = (d.vsid, tag), None
        try:
            for r in g.records:
                self.page_request(PageRequest(
                    sid=d.vsid, ssv=int(r.pasid_valid), ssid=r.pasid if r.pasid_valid else 0,
                    prg_index=r.grpid & 0x1FF, last=int(r.last), read=int(bool(r.perm & IOMMU_FAULT_PERM_READ)),
                    write=int(bool(r.perm & IOMMU_FAULT_PERM_WRITE)), exec=int(bool(r.perm & IOMMU_FAULT_PERM_EXEC)),
                    priv=int(bool(r.perm & IOMMU_FAULT_PERM_PRIV)), addr=r.addr & ~0xFFF))
        finally:
            self._delivering = None
        self.vmm["page_requests_delivered"] += len(g.records)
        if self._answered is not None:               # the model answered the group itself (queue full/off)
            self._trace_fault("pri", d.vsid, tag[2], len(g.records), f"answered_{self._answered.name.lower()}")
            return Delivery.answered(self._answered is PrgResponse.SUCCESS)
        self._trace_fault("pri", d.vsid, tag[2], len(g.records), "delivered")
        return Delivery.tag(tag)

    def pri_answered(self, vsid: int, ssid: int | None, grpid: int, code: PrgResponse) -> None:
        """A PRG response for `vsid` (the guest's CMD_PRI_RESP, or the model's automatic one)."""
        tag = ("pri", ssid, grpid & 0x1FF)
        if self._delivering == (vsid, tag):
            self._answered = code
            return
        ok = self.forwarder is not None and self.forwarder.respond(vsid, tag, code is PrgResponse.SUCCESS)
        self.vmm["page_responses" if ok else "pri_resp_ignored"] += 1
        self._trace_fault("pri_resp", vsid, grpid, 0, code.name.lower() if ok else "ignored")

    def _guest_resume(self, cmd: cmds.Command) -> int:
        """Guest CMD_RESUME (vSID, vSTAG): retry -> SUCCESS, abort/terminate -> INVALID; else ignored."""
        retry = resume_action(cmd.resp) is Resume.RETRY
        ok = self.forwarder is not None and self.forwarder.respond(cmd.sid, ("stall", cmd.stag), retry)
        self.vmm["page_responses" if ok else "resume_ignored"] += 1
        self._trace_fault("resume", cmd.sid, cmd.stag, 0, ("success" if retry else "invalid") if ok else "ignored")
        return cmds.CERROR_NONE

    def _guest_stall_term(self, cmd: cmds.Command) -> int:
        """Guest CMD_STALL_TERM: every stall given for the vSID is answered INVALID."""
        if self.forwarder is not None:
            n = self.forwarder.respond_all(cmd.sid, False, lambda tag: tag[0] == "stall")
            self.vmm["stalls_terminated"] += n
        return cmds.CERROR_NONE

    def _trace_fault(self, what: str, vsid: int, tag: int, n: int, outcome: str) -> None:
        if self.traced("vsmmu_fault"):
            self.tracer.emit("vsmmu_fault", dev=self.name, what=what, vsid=vsid, tag=tag, n=n, outcome=outcome)

    # -- accounting ----------------------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, int]:
        return dict(self.vmm)

    def cost(self, since: dict[str, int] | None = None) -> dict[str, float]:
        """Counters since `since` (a `snapshot()`), plus per-guest-invalidation ratios (`exits_per_inv`,
        `work_exits_per_inv`, `host_calls_per_inv`, `host_cmds_per_inv`) and per-fault ones: `exits_per_fault`
        and `host_calls_per_fault` (fault fd reads and writes plus HWPT_INVALIDATE calls, per fault group
        delivered)."""
        base = since or {}
        d = {k: v - base.get(k, 0) for k, v in self.vmm.items()}
        n = d.get("guest_invalidations", 0)
        out: dict[str, float] = dict(d)
        for k in ("vm_exits", "work_exits", "host_calls", "host_cmds"):
            out[f"{k.replace('vm_', '')}_per_inv"] = (d.get(k, 0) / n) if n else 0.0
        f = d.get("faults_delivered", 0)
        calls = d.get("fault_reads", 0) + d.get("fault_writes", 0) + d.get("host_calls", 0)
        out["exits_per_fault"] = d.get("vm_exits", 0) / f if f else 0.0
        out["host_calls_per_fault"] = calls / f if f else 0.0
        return out
