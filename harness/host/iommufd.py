"""An iommufd-shaped Python API over the host SMMUv3 driver: what a VMM (QEMU's accelerated vSMMU) calls to give
a guest a nested SMMU. Names follow Linux `include/uapi/linux/iommufd.h`; the ioctls are methods, object IDs are
integers, errors are `IommufdError` (an `OSError` carrying the errno the kernel returns).

Flow (Linux Documentation/userspace-api/iommufd.rst; QEMU `hw/arm/smmuv3-accel.c` calls it in this order):

    dev = ictx.open_device(sid)                    # a VFIO cdev (device fd)
    ictx.kvm_dev_vfio_file_add(kvm_vm, dev)        # KVM_DEV_VFIO_FILE_ADD - must come BEFORE bind
    dev_id = ictx.bind(dev)                        # VFIO_DEVICE_BIND_IOMMUFD: snapshots the device's KVM
    ioas = ictx.ioas_alloc(); ictx.ioas_map(ioas, iova=ipa, length=n, pa=ram_pa)
    s2 = ictx.hwpt_alloc(dev_id, ioas, flags=IOMMU_HWPT_ALLOC_NEST_PARENT)
    ictx.device_attach(dev_id, s2)                 # stage 2 only until the guest enables its vSMMU
    viommu = ictx.viommu_alloc(dev_id, s2)         # the VMID: pinned KVM VMID where the policy shares it
    ictx.vdevice_alloc(viommu, dev_id, virt_id=vsid)
    nested = ictx.hwpt_alloc(dev_id, viommu, data_type=IOMMU_HWPT_DATA_ARM_SMMUV3, data=(ste0, ste1))
    ictx.device_attach(dev_id, nested)
    ictx.hwpt_invalidate(viommu, [cmd, ...])       # guest TLBI_NH_* / CFGI_CD* / ATC_INV, returns entry_num
    q = ictx.veventq_alloc(viommu, depth=...); q.read()
    fault_id, fq = ictx.fault_queue_alloc()        # IOMMU_FAULT_QUEUE_ALLOC (the fd is the object)
    nested = ictx.hwpt_alloc(dev_id, viommu, flags=IOMMU_HWPT_FAULT_ID_VALID, fault_id=fault_id, ...)
    fq.read() -> [HwptPgfault]; fq.write([HwptPageResponse(cookie, IOMMUFD_PAGE_RESP_SUCCESS)])

What is checked, with upstream's errnos (torvalds/linux arm-smmu-v3-iommufd.c, drivers/iommu/iommufd/):
* vSTE (`arm_smmu_validate_vste`): V=0 -> stored as all zeroes (abort); any bit outside
  STRTAB_STE_0_NESTING_ALLOWED (V, Config, S1Fmt, S1ContextPtr, S1CDMax) / STRTAB_STE_1_NESTING_ALLOWED (S1DSS,
  S1CIR, S1COR, S1CSH, S1STALLD, EATS) -> EIO; Config other than abort/bypass/S1 -> EIO; EATS other than
  abort/translate -> EIO; EATS is stripped from what is stored. The exception names the offending fields.
* invalidation (`arm_vsmmu_convert_user_cmd`): TLBI_NSNH_ALL -> TLBI_NH_ALL of the vIOMMU's VMID; TLBI_NH_VA/
  VAA/ALL/ASID get the VMID field replaced; CFGI_CD/CFGI_CD_ALL/ATC_INV get the vSID replaced by the physical
  SID (unknown vSID -> EIO); any other opcode -> EIO. Commands go to the physical queue in batches of 63 plus a
  CMD_SYNC (`arm_vsmmu_cache_invalidate`); `entry_num` = commands processed, also on error (`e.entry_num`).
* events (`arm_smmu_handle_event` + `arm_vmaster_report_event`): C_BAD_STE, F_STREAM_DISABLED,
  C_BAD_SUBSTREAMID, C_BAD_CD, F_TRANSLATION, F_ADDR_SIZE, F_ACCESS, F_PERMISSION with S2=0 for a device
  attached to a nested HWPT with a vDEVICE go to the vIOMMU's vEVENTQ with SID replaced by the vSID.
  **Deviation from upstream** (documented choice): a stage-2 fault while the SMMU fetched a guest-supplied
  structure - CLASS=CD (the vSTE's S1ContextPtr or an L1CD pointer outside guest RAM) or CLASS=TT (a guest
  stage-1 table outside guest RAM) - is guest-attributable: it is forwarded converted to what an SMMU without
  stage 2 would report for an unreachable address (F_CD_FETCH resp. F_WALK_EABT, FetchAddr = the IPA).
  Upstream logs such events on the host instead. Other stage-2 faults (the IOAS lacks a mapping) stay on
  the host, as upstream.
* KVM: `kvm_dev_vfio_file_add` after `bind` does not reach the bound device (the KVM is taken at bind, as
  `vfio_df_ioctl_bind_iommufd` does); `viommu_alloc` then fails with ENODEV where the VMID policy needs the
  VM's KVM VMID (a nesting container "must come with a KVM context": J-P. Brucker's review of the pinned-VMID
  RFC, July 2021).
* IOAS_MAP only accepts host RAM that is not the SMMU driver's own memory (EFAULT), 4KB-aligned (EINVAL),
  not overlapping (EEXIST). Here `pa` stands for the pinned pages behind the user VA.

* fault objects (drivers/iommu/iommufd/eventq.c, `struct iommu_hwpt_pgfault` / `iommu_hwpt_page_response`):
  `fault_queue_alloc()` (IOMMU_FAULT_QUEUE_ALLOC) returns the object standing for the fault fd. A nested HWPT
  allocated with IOMMU_HWPT_FAULT_ID_VALID gets it as its domain's `iopf_handler`
  (`iommufd_fault_iopf_handler`): recoverable faults of its devices (stalls, PRI page request groups) are queued
  there instead of being refused. Attaching a device to such a HWPT enables its I/O page faults
  (`iommufd_fault_iopf_enable`: EOPNOTSUPP for a device that can neither stall nor use PRI); moving it away or
  detaching it answers its pending groups with Invalid (`iommufd_auto_response_faults`). `read()` returns whole
  groups only (each fault one record, the group's cookie in every record; a read that cannot take a whole group
  stops before it) and moves them to the response table; `write()` takes responses (SUCCESS or INVALID, else
  EINVAL; an unknown cookie: EINVAL), each answering its group once through the host driver (CMD_RESUME /
  CMD_PRI_RESP). Cookies are per fault object: one VMM cannot answer another's faults. **Bound** (the
  model's, counted `overflow`): at most `max_groups` groups wait to be read; more are refused (the device
  gets Response Failure/abort) so a guest flooding faults cannot grow host memory. Destroying a fault object
  that a HWPT uses: EBUSY.

Not modelled: PASID attach (IOMMU_HWPT_ALLOC with pasid), fault objects on paging HWPTs (EOPNOTSUPP), dirty
tracking, IOAS_COPY, hw queues (CMDQV), multiple SMMUs per context.
"""
from __future__ import annotations

import errno as _errno
import struct
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from devmodel.pagetable import PERM_W
from devmodel.smmuv3 import commands as cmds
from devmodel.smmuv3 import events as evmod
from devmodel.smmuv3 import ste as stemod
from devmodel.smmuv3.fault import EventType, FaultClass
from devmodel.trace import NULL_TRACER, Tracer, define

from .iopf import (IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE, IOMMU_FAULT_PAGE_REQUEST_PASID_VALID, IOMMU_PAGE_RESP_INVALID,
                   IOMMU_PAGE_RESP_SUCCESS, IopfGroup)
from .smmu_driver import (CMDQ_BATCH_ENTRIES, Master, NestedDomain, S1Domain, S2Domain, SmmuDriver,
                          SmmuDriverError)
from .vmid_policy import PolicyError

__all__ = ["Iommufd", "IommufdError", "VfioDevice", "VEvent", "VEventQ", "HwInfoArmSmmuv3",
           "vste_check", "NESTING_ALLOWED", "IOMMU_HWPT_ALLOC_NEST_PARENT", "IOMMU_HWPT_DATA_NONE",
           "IOMMU_HWPT_DATA_ARM_SMMUV3", "IOMMU_VIOMMU_TYPE_ARM_SMMUV3",
           "IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3", "IOMMU_VEVENTQ_TYPE_ARM_SMMUV3",
           "IOMMU_VEVENTQ_FLAG_LOST_EVENTS", "IOMMU_HW_INFO_TYPE_ARM_SMMUV3", "IOMMU_IOAS_MAP_FIXED_IOVA",
           "IOMMU_IOAS_MAP_WRITEABLE", "IOMMU_IOAS_MAP_READABLE", "FORWARDED_EVENTS", "FaultQueue", "HwptPgfault",
           "HwptPageResponse", "IOMMU_HWPT_FAULT_ID_VALID", "IOMMU_PGFAULT_FLAGS_PASID_VALID",
           "IOMMU_PGFAULT_FLAGS_LAST_PAGE", "IOMMUFD_PAGE_RESP_SUCCESS", "IOMMUFD_PAGE_RESP_INVALID"]

# include/uapi/linux/iommufd.h
IOMMU_HWPT_ALLOC_NEST_PARENT = 1 << 0
IOMMU_HWPT_FAULT_ID_VALID = 1 << 2
IOMMU_PGFAULT_FLAGS_PASID_VALID, IOMMU_PGFAULT_FLAGS_LAST_PAGE = 1 << 0, 1 << 1   # = the iopf flags
IOMMUFD_PAGE_RESP_SUCCESS, IOMMUFD_PAGE_RESP_INVALID = 0, 1                        # = IOMMU_PAGE_RESP_*
IOMMU_HWPT_DATA_NONE, IOMMU_HWPT_DATA_VTD_S1, IOMMU_HWPT_DATA_ARM_SMMUV3 = 0, 1, 2
IOMMU_VIOMMU_TYPE_DEFAULT, IOMMU_VIOMMU_TYPE_ARM_SMMUV3 = 0, 1
IOMMU_HWPT_INVALIDATE_DATA_VTD_S1, IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3 = 0, 1
IOMMU_VEVENTQ_TYPE_DEFAULT, IOMMU_VEVENTQ_TYPE_ARM_SMMUV3 = 0, 1
IOMMU_VEVENTQ_FLAG_LOST_EVENTS = 1 << 0
IOMMU_HW_INFO_TYPE_ARM_SMMUV3 = 2
IOMMU_IOAS_MAP_FIXED_IOVA, IOMMU_IOAS_MAP_WRITEABLE, IOMMU_IOAS_MAP_READABLE = 1 << 0, 1 << 1, 1 << 2
_PAGE = 4096
_M64 = (1 << 64) - 1

define("iommufd_call", ("op", "obj", "errno", "detail"), "an iommufd operation (errno 0: success)")
define("iommufd_invalidate", ("viommu", "n", "processed", "errno"), "IOMMU_HWPT_INVALIDATE on a vIOMMU")
define("iommufd_vevent", ("viommu", "vsid", "type", "lost"), "an event queued (or lost) on a vEVENTQ")
define("iommufd_fault", ("fault", "dev_id", "what", "cookie", "n", "code"),
       "a fault object: queued | overflow | read | response | auto_response (n: faults in the group)")
MAX_FAULT_GROUPS = 256

FORWARDED_EVENTS = frozenset({EventType.C_BAD_STE, EventType.F_STREAM_DISABLED, EventType.C_BAD_SUBSTREAMID,
                              EventType.C_BAD_CD, EventType.F_TRANSLATION, EventType.F_ADDR_SIZE,
                              EventType.F_ACCESS, EventType.F_PERMISSION})


class IommufdError(OSError):
    """What the ioctl would fail with: `.errno`, `.strerror` (the reason) and, for HWPT_INVALIDATE,
    `.entry_num` (entries processed before the failing one)."""

    def __init__(self, err: int, msg: str, entry_num: int | None = None):
        super().__init__(err, msg)
        self.entry_num = entry_num


# ---- vSTE validation --------------------------------------------------------------------------------------------

def _mask(*names: str) -> int:
    m = 0
    for n in names:
        m |= stemod.STE_LAYOUT.by_name[n].mask
    return m


_W0 = _mask("v", "config", "s1fmt", "s1contextptr", "s1cdmax")
_W1 = _mask("s1dss", "s1cir", "s1cor", "s1csh", "s1stalld", "eats") >> 64
#: (word 0, word 1) bits a guest may set (Linux STRTAB_STE_0/1_NESTING_ALLOWED)
NESTING_ALLOWED = (_W0, _W1)
_EATS_SHIFT = stemod.STE_LAYOUT.by_name["eats"].lsb - 64
_EATS_ABT, _EATS_TRANS = 0, 1


def _fields_in(bits: int, word: int) -> list[str]:
    raw = bits << (64 * word)
    out = [f.name for f in stemod.STE_LAYOUT.fields if f.mask & raw]
    undefined = stemod.STE_LAYOUT.undefined_bits(raw)
    if undefined:
        out.append(f"RES0 bits {undefined:#x}")
    return out


def vste_check(ste0: int, ste1: int) -> tuple[int, int, bool]:
    """`arm_smmu_validate_vste`: the vSTE words to store (EATS stripped) and enable_ats, or IommufdError(EIO)
    naming the fields that are not allowed."""
    ste0 &= _M64
    ste1 &= _M64
    if not ste0 & 1:
        return 0, 0, False
    bad0, bad1 = ste0 & ~_W0, ste1 & ~_W1
    if bad0 or bad1:
        names = _fields_in(bad0, 0) + _fields_in(bad1, 1)
        raise IommufdError(_errno.EIO, f"vSTE sets fields a guest may not control: {', '.join(names)} "
                           f"(word0 {bad0:#x}, word1 {bad1:#x})")
    cfg = stemod.STE_LAYOUT.get(ste0, "CONFIG")
    if cfg not in (stemod.CONFIG_ABORT, stemod.CONFIG_BYPASS, stemod.CONFIG_S1):
        raise IommufdError(_errno.EIO, f"vSTE.Config={cfg:#05b}: only abort, bypass or stage-1 translate "
                           "(the host owns stage 2)")
    eats = (ste1 >> _EATS_SHIFT) & 3
    ste1 &= ~(3 << _EATS_SHIFT)
    if eats not in (_EATS_ABT, _EATS_TRANS):
        raise IommufdError(_errno.EIO, f"vSTE.EATS={eats:#04b}: only full ATS or ATS disabled")
    return ste0, ste1, cfg == stemod.CONFIG_S1 and eats == _EATS_TRANS


# ---- objects ---------------------------------------------------------------------------------------------------

class VfioDevice:
    """A VFIO cdev (device fd) for one StreamID. `kvm` is what KVM_DEV_VFIO_FILE_ADD set; `bound_kvm` what
    bind took (the one that counts)."""

    def __init__(self, master: Master, name: str):
        self.master, self.name = master, name
        self.kvm: Any = None
        self.bound_kvm: Any = None
        self.dev_id: int | None = None
        self.hwpt: Any = None
        self.msi_pages: list[int] = []                       # doorbell pages its MSIs use (prepare_msi)

    @property
    def sid(self) -> int:
        return self.master.sid

    def __repr__(self) -> str:
        return f"<VfioDevice {self.name} sid={self.sid:#x} dev_id={self.dev_id}>"


class _Obj:
    kind = "?"
    id = 0


class _Ioas(_Obj):
    kind = "ioas"

    def __init__(self) -> None:
        self.maps: dict[int, tuple[int, int, int]] = {}      # iova -> (length, pa, perm)
        self.hwpts: list[_HwptPaging] = []
        self.next_iova = 1 << 32


class _HwptPaging(_Obj):
    kind = "hwpt_paging"

    def __init__(self, ioas: _Ioas, domain: S1Domain | S2Domain, auto: bool) -> None:
        self.ioas, self.domain, self.auto = ioas, domain, auto
        self.devices: list[VfioDevice] = []
        self.viommus: list[_Viommu] = []
        self.msi_installed: set[int] = set()                 # doorbell pages mapped in its SW_MSI window

    @property
    def nest_parent(self) -> bool:
        return isinstance(self.domain, S2Domain) and self.domain.nest_parent


class _Viommu(_Obj):
    kind = "viommu"

    def __init__(self, parent: _HwptPaging, vmid: int, owner: Any) -> None:
        self.parent, self.vmid, self.owner = parent, vmid, owner
        self.vdevs: dict[int, _Vdevice] = {}                 # virt_id -> vDEVICE
        self.nested: list[_HwptNested] = []
        self.veventq: VEventQ | None = None


class _Vdevice(_Obj):
    kind = "vdevice"

    def __init__(self, viommu: _Viommu, dev: VfioDevice, virt_id: int) -> None:
        self.viommu, self.dev, self.virt_id = viommu, dev, virt_id


class _HwptNested(_Obj):
    kind = "hwpt_nested"

    def __init__(self, viommu: _Viommu, domain: NestedDomain, enable_ats: bool, fault: Any = None) -> None:
        self.viommu, self.domain, self.enable_ats = viommu, domain, enable_ats
        self.fault = fault                                   # FaultQueue (IOMMU_HWPT_FAULT_ID_VALID) or None
        self.devices: list[VfioDevice] = []


@dataclass(frozen=True)
class VEvent:
    """One read() record: `struct iommufd_vevent_header` + `struct iommu_vevent_arm_smmuv3` (None for a
    LOST_EVENTS header)."""
    flags: int
    sequence: int
    evt: tuple[int, int, int, int] | None

    @property
    def lost(self) -> bool:
        return bool(self.flags & IOMMU_VEVENTQ_FLAG_LOST_EVENTS)

    @property
    def event(self) -> evmod.Event | None:
        if self.evt is None:
            return None
        return evmod.decode(b"".join(w.to_bytes(8, "little") for w in self.evt))


class VEventQ(_Obj):
    """IOMMU_VEVENTQ_ALLOC's queue. `read()` drains the host EVTQ first (the IRQ thread may not have run)."""
    kind = "veventq"

    def __init__(self, ctx: "Iommufd", viommu: _Viommu, depth: int) -> None:
        self.ctx, self.viommu, self.depth = ctx, viommu, depth
        self.queue: list[VEvent] = []
        self.sequence = 0
        self.lost = 0
        self._lost_pending = False

    def report(self, evt: tuple[int, int, int, int], vsid: int, etype: int) -> None:
        seq = self.sequence
        self.sequence = (self.sequence + 1) & 0x7FFF_FFFF
        lost = len(self.queue) >= self.depth
        if lost:
            self.lost += 1
            self._lost_pending = True
        else:
            self.queue.append(VEvent(0, seq, evt))
        if self.ctx._on("iommufd_vevent"):
            self.ctx.tracer.emit("iommufd_vevent", viommu=self.viommu.id, vsid=vsid, type=etype, lost=int(lost))

    def read(self, max_events: int | None = None) -> list[VEvent]:
        self.ctx.driver.drain_events()
        n = len(self.queue) if max_events is None else min(max_events, len(self.queue))
        out, self.queue = self.queue[:n], self.queue[n:]
        if self._lost_pending and not self.queue:
            out.append(VEvent(IOMMU_VEVENTQ_FLAG_LOST_EVENTS, self.sequence, None))
            self._lost_pending = False
        return out


@dataclass(frozen=True)
class HwptPgfault:
    """One fault record of a fault fd read (`struct iommu_hwpt_pgfault`, 40 bytes: flags, dev_id, pasid, grpid,
    perm, __reserved, addr (aligned u64), length, cookie). Flags and perm are the iopf values
    (IOMMU_PGFAULT_FLAGS_*, IOMMU_PGFAULT_PERM_* = IOMMU_FAULT_PERM_*)."""
    flags: int
    dev_id: int
    pasid: int
    grpid: int
    perm: int
    addr: int
    length: int
    cookie: int
    SIZE = 40
    _FMT = struct.Struct("<IIIIIIQII")

    @property
    def last(self) -> bool:
        return bool(self.flags & IOMMU_PGFAULT_FLAGS_LAST_PAGE)

    @property
    def pasid_valid(self) -> bool:
        return bool(self.flags & IOMMU_PGFAULT_FLAGS_PASID_VALID)

    def to_bytes(self) -> bytes:
        return self._FMT.pack(self.flags, self.dev_id, self.pasid, self.grpid, self.perm, 0, self.addr,
                              self.length, self.cookie)

    @classmethod
    def from_bytes(cls, raw: bytes) -> "HwptPgfault":
        f, d, p, g, perm, _res, a, ln, c = cls._FMT.unpack(raw)
        return cls(f, d, p, g, perm, a, ln, c)


@dataclass(frozen=True)
class HwptPageResponse:
    """One response of a fault fd write (`struct iommu_hwpt_page_response`: cookie, code)."""
    cookie: int
    code: int
    SIZE = 8
    _FMT = struct.Struct("<II")

    def to_bytes(self) -> bytes:
        return self._FMT.pack(self.cookie & 0xFFFF_FFFF, self.code & 0xFFFF_FFFF)

    @classmethod
    def from_bytes(cls, raw: bytes) -> "HwptPageResponse":
        return cls(*cls._FMT.unpack(raw))


class FaultQueue(_Obj):
    """IOMMU_FAULT_QUEUE_ALLOC's object, standing for the fault fd (module docstring). `iopf_handler` is what a
    HWPT allocated with IOMMU_HWPT_FAULT_ID_VALID hands the iopf queue."""
    kind = "fault"

    def __init__(self, ctx: "Iommufd", max_groups: int = MAX_FAULT_GROUPS) -> None:
        self.ctx, self.max_groups = ctx, max_groups
        self.deliver: list[IopfGroup] = []             # reported, not yet read
        self.response: dict[int, IopfGroup] = {}       # read, waiting for userspace's response (by cookie)
        self.users = 0                                 # HWPTs using it
        self.stats: Counter[str] = Counter()
        self._next_cookie = 1

    # -- the kernel side ----------------------------------------------------------------------------------------
    def iopf_handler(self, group: IopfGroup) -> int:
        """`iommufd_fault_iopf_handler`: queue the group for userspace (ENOSPC beyond the bound)."""
        dev = self.ctx.device_of(group.master)
        if dev is None or dev.dev_id is None:
            return _errno.ENODEV
        if len(self.deliver) >= self.max_groups:
            self.stats["overflow"] += 1
            self._trace(dev.dev_id, "overflow", 0, len(group.faults), -1)
            return _errno.ENOSPC
        group.data["dev_id"] = dev.dev_id
        self.deliver.append(group)
        self.stats["queued"] += 1
        self._trace(dev.dev_id, "queued", 0, len(group.faults), -1)
        return 0

    @property
    def readable(self) -> bool:
        """The fd polls readable: a group waits to be read."""
        return bool(self.deliver)

    # -- the fd ---------------------------------------------------------------------------------------------------
    def read(self, max_records: int | None = None) -> list[HwptPgfault]:
        """read(2) of up to `max_records` records (whole groups only; None: everything queued)."""
        out: list[HwptPgfault] = []
        while self.deliver:
            group = self.deliver[0]
            if max_records is not None and len(out) + len(group.faults) > max_records:
                break
            self.deliver.pop(0)
            cookie = self._next_cookie
            self._next_cookie = self._next_cookie % 0xFFFF_FFFF + 1
            group.cookie = cookie
            self.response[cookie] = group
            out += [HwptPgfault(f.flags, group.data["dev_id"], f.pasid, f.grpid, f.perm, f.addr, 0, cookie)
                    for f in group.faults]
            self.stats["read"] += 1
            self._trace(group.data["dev_id"], "read", cookie, len(group.faults), -1)
        return out

    def read_bytes(self, count: int) -> bytes:
        """read(2) into a buffer of `count` bytes: ESPIPE unless a multiple of the record size."""
        if count % HwptPgfault.SIZE:
            raise IommufdError(_errno.ESPIPE, f"fault read of {count} bytes: not a multiple of "
                               f"sizeof(struct iommu_hwpt_pgfault) = {HwptPgfault.SIZE}")
        return b"".join(r.to_bytes() for r in self.read(count // HwptPgfault.SIZE))

    def write(self, responses: Iterable[HwptPageResponse | bytes]) -> int:
        """write(2) of responses; returns how many were taken. The first bad one (code other than SUCCESS /
        INVALID, unknown cookie) stops the write: EINVAL if it was the first, else the count so far."""
        done = 0
        for r in responses:
            resp = r if isinstance(r, HwptPageResponse) else self._parse(r)
            err = self._respond(resp)
            if err:
                self.stats["bad_response"] += 1
                if not done:
                    raise IommufdError(_errno.EINVAL, f"fault response: {err}")
                break
            done += 1
        return done

    def write_bytes(self, raw: bytes) -> int:
        """write(2) of a buffer: ESPIPE unless a multiple of the response size; returns bytes taken."""
        n = HwptPageResponse.SIZE
        if len(raw) % n:
            raise IommufdError(_errno.ESPIPE, f"fault write of {len(raw)} bytes: not a multiple of "
                               f"sizeof(struct iommu_hwpt_page_response) = {n}")
        return n * self.write([raw[i:i + n] for i in range(0, len(raw), n)])

    @staticmethod
    def _parse(raw: bytes) -> HwptPageResponse:
        if len(raw) != HwptPageResponse.SIZE:
            raise IommufdError(_errno.EINVAL, f"a response is {HwptPageResponse.SIZE} bytes, got {len(raw)}")
        return HwptPageResponse.from_bytes(bytes(raw))

    def _respond(self, resp: HwptPageResponse) -> str:
        if resp.code not in (IOMMUFD_PAGE_RESP_SUCCESS, IOMMUFD_PAGE_RESP_INVALID):
            return f"code {resp.code} is neither SUCCESS nor INVALID"
        group = self.response.pop(resp.cookie, None)
        if group is None:
            return f"cookie {resp.cookie} names no fault group read from this queue"
        code = IOMMU_PAGE_RESP_SUCCESS if resp.code == IOMMUFD_PAGE_RESP_SUCCESS else IOMMU_PAGE_RESP_INVALID
        self.ctx.driver.iopf.respond(group, code)
        self.stats["responses"] += 1
        self._trace(group.data["dev_id"], "response", resp.cookie, len(group.faults), resp.code)
        return ""

    def auto_respond(self, master: Master) -> int:
        """`iommufd_auto_response_faults`: every pending group of `master` (read or not) answered Invalid."""
        mine = [g for g in self.deliver if g.master is master]
        self.deliver = [g for g in self.deliver if g.master is not master]
        for cookie in [c for c, g in self.response.items() if g.master is master]:
            mine.append(self.response.pop(cookie))
        for g in mine:
            self.ctx.driver.iopf.respond(g, IOMMU_PAGE_RESP_INVALID)
            self.stats["auto_responses"] += 1
            self._trace(g.data.get("dev_id", -1), "auto_response", g.cookie, len(g.faults),
                        IOMMUFD_PAGE_RESP_INVALID)
        return len(mine)

    def _trace(self, dev_id: int, what: str, cookie: int, n: int, code: int) -> None:
        if self.ctx._on("iommufd_fault"):
            self.ctx.tracer.emit("iommufd_fault", fault=self.id, dev_id=dev_id, what=what, cookie=cookie, n=n,
                                 code=code)


@dataclass(frozen=True)
class HwInfoArmSmmuv3:
    """IOMMU_GET_HW_INFO for IOMMU_HW_INFO_TYPE_ARM_SMMUV3 (`struct iommu_hw_info_arm_smmuv3`)."""
    idr: tuple[int, ...]
    iidr: int
    aidr: int
    type: int = IOMMU_HW_INFO_TYPE_ARM_SMMUV3


class _VMaster:
    """`struct arm_smmu_vmaster`: routes a device's events to its vIOMMU's vEVENTQ with the vSID."""

    def __init__(self, viommu: _Viommu, vsid: int) -> None:
        self.viommu, self.vsid = viommu, vsid

    def report_event(self, ev: evmod.Event) -> bool:
        q = self.viommu.veventq
        if q is None or ev.stall:
            return False
        try:
            t = EventType(ev.type)
        except ValueError:
            return False
        sid_mask = evmod.EVENT_LAYOUT.by_name["sid"].mask
        if t in FORWARDED_EVENTS and not ev.s2:
            raw = (ev.raw & ~sid_mask) | evmod.EVENT_LAYOUT.by_name["sid"].put(0, self.vsid)
            out = evmod.decode(raw)
        elif ev.s2 and ev.class_ == FaultClass.CD and t in FORWARDED_EVENTS:
            out = evmod.Event(type=int(EventType.F_CD_FETCH), sid=self.vsid, ssv=ev.ssv, ssid=ev.ssid,
                              addr2=ev.ipa)
        elif ev.s2 and ev.class_ == FaultClass.TT and t in FORWARDED_EVENTS:
            out = evmod.Event(type=int(EventType.F_WALK_EABT), sid=self.vsid, ssv=ev.ssv, ssid=ev.ssid,
                              rnw=ev.rnw, ind=ev.ind, pnu=ev.pnu, class_=int(FaultClass.TT),
                              input_addr=ev.input_addr, addr2=ev.ipa)
        else:
            return False
        raw = evmod.encode(out)
        words = tuple(int.from_bytes(raw[i:i + 8], "little") for i in range(0, 32, 8))
        q.report(words, self.vsid, out.type)      # type: ignore[arg-type]
        return True


# ---- the context ------------------------------------------------------------------------------------------------

class Iommufd:
    """One /dev/iommu file over the host SMMU driver."""

    def __init__(self, driver: SmmuDriver, tracer: Tracer | None = None):
        self.driver = driver
        self.tracer = tracer if tracer is not None else driver.tracer or NULL_TRACER
        self.objects: dict[int, _Obj] = {}
        self.devices: dict[int, VfioDevice] = {}
        self._next_id = 1
        self.kvm_files: list[tuple[Any, VfioDevice]] = []
        start, length, _ = next(r for r in driver.resv_regions() if r[2] == "sw_msi")
        self.sw_msi = (start, length)                        # IOMMU_OPTION_SW_MSI_START / _SIZE
        self.msi_iovas: dict[int, int] = {}                  # doorbell page PA -> its IOVA in the window

    def _on(self, name: str) -> bool:
        return name in self.tracer.enabled

    # -- helpers -------------------------------------------------------------------------------------------
    def _fail(self, err: int, op: str, msg: str, entry_num: int | None = None) -> IommufdError:
        if self._on("iommufd_call"):
            self.tracer.emit("iommufd_call", op=op, obj=-1, errno=err, detail=msg)
        return IommufdError(err, f"{op}: {msg}", entry_num)

    def _ok(self, op: str, obj: int, detail: str = "") -> None:
        if self._on("iommufd_call"):
            self.tracer.emit("iommufd_call", op=op, obj=obj, errno=0, detail=detail)

    def _add(self, obj: _Obj) -> int:
        obj.id = self._next_id
        self._next_id += 1
        self.objects[obj.id] = obj
        return obj.id

    def _get(self, op: str, obj_id: int, *types: type) -> Any:
        obj = self.objects.get(obj_id)
        if obj is None:
            raise self._fail(_errno.ENOENT, op, f"no object {obj_id}")
        if types and not isinstance(obj, types):
            raise self._fail(_errno.EINVAL, op, f"object {obj_id} is a {obj.kind}, not "
                             f"{' or '.join(t.kind for t in types)}")
        return obj

    def _dev(self, op: str, dev_id: int) -> VfioDevice:
        dev = self.devices.get(dev_id)
        if dev is None:
            raise self._fail(_errno.ENOENT, op, f"no bound device {dev_id}")
        return dev

    def _drv(self, op: str, fn: Any, *a: Any) -> Any:
        try:
            return fn(*a)
        except SmmuDriverError as e:
            raise self._fail(e.errno, op, e.strerror) from None

    # -- VFIO cdev and KVM ---------------------------------------------------------------------------------
    def open_device(self, sid: int, name: str = "", *, pcie: Any = None, can_stall: bool = False) -> VfioDevice:
        """Open the VFIO cdev of the device with StreamID `sid` (probing it in the SMMU driver with its PCIe
        function controls `pcie` and firmware's `can_stall`, as the host's bus and firmware describe it)."""
        m = self.driver.masters.get(sid)
        if m is None:
            try:
                m = self.driver.probe_device(sid, name, pcie=pcie, can_stall=can_stall)
            except SmmuDriverError as e:
                raise self._fail(e.errno, "open_device", e.strerror) from None
        return VfioDevice(m, name or f"vfio-{sid:#x}")

    def device_of(self, master: Master) -> VfioDevice | None:
        """The bound device of a master (None when it is not bound to this context)."""
        return next((d for d in self.devices.values() if d.master is master), None)

    def kvm_dev_vfio_file_add(self, kvm_vm: Any, dev: VfioDevice) -> None:
        """KVM_DEV_VFIO_FILE_ADD on the VM's kvm-vfio device: links the device file to the VM. A device already
        bound keeps the KVM it had at bind (none), as upstream."""
        dev.kvm = kvm_vm
        self.kvm_files.append((kvm_vm, dev))
        self._ok("kvm_dev_vfio_file_add", -1, f"{dev.name} -> {kvm_vm!r} (bound={dev.dev_id is not None})")

    def bind(self, dev: VfioDevice) -> int:
        """VFIO_DEVICE_BIND_IOMMUFD -> dev_id. Takes the device's KVM now."""
        if dev.dev_id is not None:
            raise self._fail(_errno.EBUSY, "bind", f"{dev.name} is already bound (dev_id {dev.dev_id})")
        dev.bound_kvm = dev.kvm
        dev.dev_id = self._next_id
        self._next_id += 1
        self.devices[dev.dev_id] = dev
        self._ok("bind", dev.dev_id, f"{dev.name} kvm={dev.bound_kvm!r}")
        return dev.dev_id

    def unbind(self, dev_id: int) -> None:
        dev = self._dev("unbind", dev_id)
        for o in list(self.objects.values()):
            if isinstance(o, _Vdevice) and o.dev is dev:
                raise self._fail(_errno.EBUSY, "unbind", f"{dev.name} has vDEVICE {o.id}")
        if dev.hwpt is not None:
            self.device_detach(dev_id)
        del self.devices[dev_id]
        dev.dev_id = None
        dev.bound_kvm = None

    def get_hw_info(self, dev_id: int) -> HwInfoArmSmmuv3:
        """IOMMU_GET_HW_INFO: the SMMU's ID registers, as `arm_smmu_hw_info` reads them."""
        self._dev("get_hw_info", dev_id)
        idr, iidr, aidr = self.driver.hw_info()
        return HwInfoArmSmmuv3(idr, iidr, aidr)

    # -- IOAS -----------------------------------------------------------------------------------------------
    def ioas_alloc(self) -> int:
        i = self._add(_Ioas())
        self._ok("ioas_alloc", i)
        return i

    def ioas_map(self, ioas_id: int, length: int, pa: int, iova: int | None = None,
                 flags: int = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE
                 ) -> int:
        """IOMMU_IOAS_MAP of the memory at host PA `pa` (the pinned pages behind the user VA); returns the IOVA.
        Every HWPT of the IOAS gets the mapping (host stage-2 or stage-1 tables)."""
        op = "ioas_map"
        ioas = self._get(op, ioas_id, _Ioas)
        if flags & ~(IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE):
            raise self._fail(_errno.EOPNOTSUPP, op, f"unknown flags {flags:#x}")
        if flags & IOMMU_IOAS_MAP_FIXED_IOVA:
            if iova is None:
                raise self._fail(_errno.EINVAL, op, "FIXED_IOVA without an iova")
        else:
            iova = (ioas.next_iova + _PAGE - 1) & ~(_PAGE - 1)
        if length <= 0 or length % _PAGE or iova % _PAGE or pa % _PAGE:
            raise self._fail(_errno.EINVAL, op, f"iova {iova:#x} / pa {pa:#x} / length {length:#x} not "
                             "4KB-aligned and positive")
        for start, (ln, _p, _f) in ioas.maps.items():
            if start < iova + length and iova < start + ln:
                raise self._fail(_errno.EEXIST, op, f"[{iova:#x}, +{length:#x}) overlaps the mapping at "
                                 f"{start:#x}")
        lo, n = self.sw_msi
        if lo < iova + length and iova < lo + n:
            raise self._fail(_errno.EADDRINUSE, op, f"[{iova:#x}, +{length:#x}) overlaps the reserved SW_MSI "
                             f"window [{lo:#x}, +{n:#x})")
        region = self.driver.bus.find(pa)
        if region is None or not region.is_ram or pa + length > region.end or \
                self.driver.mem.owns(pa, length):
            raise self._fail(_errno.EFAULT, op, f"[{pa:#x}, +{length:#x}) is not user memory that can be pinned")
        perm = (1 if flags & IOMMU_IOAS_MAP_READABLE else 0) | (2 if flags & IOMMU_IOAS_MAP_WRITEABLE else 0)
        ioas.maps[iova] = (length, pa, perm)
        ioas.next_iova = max(ioas.next_iova, iova + length)
        for h in ioas.hwpts:
            self._drv(op, self.driver.map, h.domain, iova, pa, length, perm)
        self._ok(op, ioas_id, f"{iova:#x}+{length:#x} -> {pa:#x}")
        return iova

    def ioas_unmap(self, ioas_id: int, iova: int, length: int) -> int:
        """IOMMU_IOAS_UNMAP of whole mappings inside [iova, iova+length): tables updated and the IOTLB
        invalidated in every HWPT (every VMID tagging a nest parent). Returns the bytes unmapped."""
        op = "ioas_unmap"
        ioas = self._get(op, ioas_id, _Ioas)
        hit = [(s, v) for s, v in ioas.maps.items() if s < iova + length and iova < s + v[0]]
        if not hit:
            raise self._fail(_errno.ENOENT, op, f"nothing mapped in [{iova:#x}, +{length:#x})")
        for s, (ln, _p, _f) in hit:
            if s < iova or s + ln > iova + length:
                raise self._fail(_errno.ENOENT, op, f"[{iova:#x}, +{length:#x}) would split the mapping at "
                                 f"{s:#x}+{ln:#x}")
        done = 0
        for s, (ln, _p, _f) in hit:
            del ioas.maps[s]
            for h in ioas.hwpts:
                self._drv(op, self.driver.unmap, h.domain, s, ln)
            done += ln
        self._ok(op, ioas_id, f"{done:#x} bytes")
        return done

    # -- HWPT ------------------------------------------------------------------------------------------------
    def hwpt_alloc(self, dev_id: int, pt_id: int, flags: int = 0, data_type: int = IOMMU_HWPT_DATA_NONE,
                   data: Sequence[int] | bytes | None = None, fault_id: int = 0) -> int:
        """IOMMU_HWPT_ALLOC. From an IOAS: a paging HWPT (stage 2 with NEST_PARENT, else stage 1). From a
        vIOMMU with IOMMU_HWPT_DATA_ARM_SMMUV3 and `data` = vSTE words 0-1: a nested HWPT; with
        IOMMU_HWPT_FAULT_ID_VALID its recoverable faults go to fault object `fault_id`."""
        op = "hwpt_alloc"
        self._dev(op, dev_id)
        pt = self._get(op, pt_id, _Ioas, _Viommu, _HwptPaging)
        if isinstance(pt, _Ioas):
            if data_type != IOMMU_HWPT_DATA_NONE or data is not None:
                raise self._fail(_errno.EINVAL, op, "a paging HWPT takes no driver data")
            if flags & ~IOMMU_HWPT_ALLOC_NEST_PARENT:
                raise self._fail(_errno.EOPNOTSUPP, op, f"flags {flags:#x} not supported for a paging HWPT")
            h = self._paging(op, pt, bool(flags & IOMMU_HWPT_ALLOC_NEST_PARENT), auto=False)
            self._ok(op, h.id, "nest parent" if h.nest_parent else h.domain.kind)
            return h.id
        if isinstance(pt, _HwptPaging):
            raise self._fail(_errno.EOPNOTSUPP, op, "SMMUv3 nested HWPTs are allocated on a vIOMMU, not on the "
                             "parent HWPT")
        if flags & ~IOMMU_HWPT_FAULT_ID_VALID:
            raise self._fail(_errno.EOPNOTSUPP, op, f"flags {flags:#x} not supported for a nested HWPT")
        if data_type != IOMMU_HWPT_DATA_ARM_SMMUV3:
            raise self._fail(_errno.EINVAL, op, f"data_type {data_type} is not IOMMU_HWPT_DATA_ARM_SMMUV3")
        fault = self._get(op, fault_id, FaultQueue) if flags & IOMMU_HWPT_FAULT_ID_VALID else None
        ste0, ste1 = self._vste_words(op, data)
        try:
            s0, s1, ats = vste_check(ste0, ste1)
        except IommufdError as e:
            raise self._fail(e.errno, op, e.strerror) from None
        viommu: _Viommu = pt
        dom = self._drv(op, lambda: self.driver.alloc_nested(viommu.parent.domain, s0, s1, viommu.vmid, viommu,
                                                             ats=ats))
        h = _HwptNested(viommu, dom, ats, fault)
        if fault is not None:
            dom.iopf_handler = fault.iopf_handler
            fault.users += 1
        self._add(h)
        viommu.nested.append(h)
        self._ok(op, h.id, f"nested cfg={dom.config:#05b}")
        return h.id

    def _vste_words(self, op: str, data: Any) -> tuple[int, int]:
        if isinstance(data, (bytes, bytearray)):
            if len(data) != 16:
                raise self._fail(_errno.EINVAL, op, f"struct iommu_hwpt_arm_smmuv3 is 16 bytes, got {len(data)}")
            return int.from_bytes(data[:8], "little"), int.from_bytes(data[8:], "little")
        if data is None or len(data) != 2:
            raise self._fail(_errno.EINVAL, op, "need the vSTE's two 64-bit words (ste[2])")
        return int(data[0]), int(data[1])

    def _paging(self, op: str, ioas: _Ioas, nest_parent: bool, auto: bool) -> _HwptPaging:
        if nest_parent or not self.driver.caps.s1p:
            dom = self._drv(op, self.driver.alloc_s2, "", nest_parent)
        else:
            dom = self._drv(op, self.driver.alloc_s1, "")
        h = _HwptPaging(ioas, dom, auto)
        for iova, (ln, pa, perm) in ioas.maps.items():
            self._drv(op, self.driver.map, dom, iova, pa, ln, perm)
        ioas.hwpts.append(h)
        self._add(h)
        return h

    def device_attach(self, dev_id: int, pt_id: int) -> int:
        """VFIO_DEVICE_ATTACH_IOMMUFD_PT: attach to an IOAS (an automatic paging HWPT), a paging HWPT or a nested
        HWPT. Returns the HWPT id. A nested HWPT that translates needs the device's vDEVICE on its vIOMMU."""
        op = "device_attach"
        dev = self._dev(op, dev_id)
        pt = self._get(op, pt_id, _Ioas, _HwptPaging, _HwptNested)
        if isinstance(pt, _Ioas):
            pt = next((h for h in pt.hwpts if h.auto), None) or self._paging(op, pt, False, auto=True)
        vmaster = None
        if isinstance(pt, _HwptNested):
            vdev = next((v for v in pt.viommu.vdevs.values() if v.dev is dev), None)
            if vdev is None and pt.domain.config == stemod.CONFIG_S1:
                raise self._fail(_errno.ENOENT, op, f"{dev.name} has no vDEVICE on vIOMMU {pt.viommu.id}: a "
                                 "translating nested HWPT needs the vSID (arm_smmu_attach_prepare_vmaster)")
            if vdev is not None:
                vmaster = _VMaster(pt.viommu, vdev.virt_id)
        fault = getattr(pt, "fault", None)
        if fault is not None and not dev.master.iopf:        # iommufd_fault_iopf_enable
            self._drv(op, self.driver.enable_iopf, dev.master)
        try:
            self._drv(op, self.driver.attach, dev.master, pt.domain)
        except IommufdError:
            if fault is not None and getattr(dev.hwpt, "fault", None) is None:
                self.driver.disable_iopf(dev.master)
            raise
        self._leave_hwpt(dev, pt)
        dev.hwpt = pt
        pt.devices.append(dev)
        dev.master.vmaster = vmaster
        self._install_msi(op, dev)
        self._ok(op, pt.id, f"{dev.name} -> {pt.kind}")
        return pt.id

    def _leave_hwpt(self, dev: VfioDevice, new: Any) -> None:
        """The device leaves its HWPT: a fault object it used answers its pending groups (Invalid) and, when
        the new one has none, its I/O page faults are disabled (`iommufd_fault_domain_replace_dev`)."""
        old = dev.hwpt
        if old is None:
            return
        if dev in old.devices:
            old.devices.remove(dev)
        old_fault = getattr(old, "fault", None)
        if old_fault is not None and old_fault is not getattr(new, "fault", None):
            old_fault.auto_respond(dev.master)
        if old_fault is not None and getattr(new, "fault", None) is None and dev.master.iopf:
            self.driver.disable_iopf(dev.master)

    def device_detach(self, dev_id: int) -> None:
        """VFIO_DEVICE_DETACH_IOMMUFD_PT: back to the blocked (abort) STE."""
        dev = self._dev("device_detach", dev_id)
        dev.master.vmaster = None
        self._drv("device_detach", self.driver.detach, dev.master)
        self._leave_hwpt(dev, None)
        dev.hwpt = None
        self._ok("device_detach", dev_id)

    # -- MSIs (the software-managed MSI window) ---------------------------------------------------------------
    def set_sw_msi(self, start: int, length: int) -> None:
        """IOMMU_OPTION_SW_MSI_START / IOMMU_OPTION_SW_MSI_SIZE (N. Chen's iommufd series, 2025): move the
        window where doorbells are mapped, e.g. to the guest's vITS doorbell GPA so that the guest's own MSI
        mapping (its stage 1 to that GPA) lands on the physical doorbell through stage 2. Before any MSI is
        prepared (EBUSY after), page-aligned (EINVAL), clear of every IOAS mapping (EADDRINUSE)."""
        op = "set_sw_msi"
        if self.msi_iovas:
            raise self._fail(_errno.EBUSY, op, "MSI doorbells are already mapped in the current window")
        if length <= 0 or start % _PAGE or length % _PAGE:
            raise self._fail(_errno.EINVAL, op, f"[{start:#x}, +{length:#x}) is not a page-aligned window")
        for o in self.objects.values():
            for iova, (ln, _p, _f) in getattr(o, "maps", {}).items():
                if iova < start + length and start < iova + ln:
                    raise self._fail(_errno.EADDRINUSE, op, f"the window overlaps IOAS {o.id}'s mapping at "
                                     f"{iova:#x}")
        self.sw_msi = (start, length)
        self._ok(op, 0, f"{start:#x}+{length:#x}")

    def prepare_msi(self, dev_id: int, msi_addr: int) -> int:
        """What the host's irq layer does when VFIO_DEVICE_SET_IRQS enables a bound device's MSI whose doorbell
        is at host PA `msi_addr` (`iommu_dma_prepare_msi` -> `iommufd_sw_msi`): the doorbell's page gets an
        IOVA in the SW_MSI window (the first page for the first doorbell) and is mapped write-only, Device
        memory, in the paging domain the device is attached to (a nested HWPT's stage-2 parent). Returns the
        doorbell's IOVA. ENOSPC when the window is full, EINVAL for a device attached to nothing."""
        op = "prepare_msi"
        dev = self._dev(op, dev_id)
        if dev.hwpt is None:
            raise self._fail(_errno.EINVAL, op, f"{dev.name} is attached to no HWPT")
        page = msi_addr & ~(_PAGE - 1)
        iova = self.msi_iovas.get(page)
        if iova is None:
            start, length = self.sw_msi
            iova = start + len(self.msi_iovas) * _PAGE
            if iova + _PAGE > start + length:
                raise self._fail(_errno.ENOSPC, op, f"the SW_MSI window [{start:#x}, +{length:#x}) is full")
            self.msi_iovas[page] = iova
        if page not in dev.msi_pages:
            dev.msi_pages.append(page)
        self._install_msi(op, dev)
        self._ok(op, dev_id, f"doorbell {msi_addr:#x} at iova {iova + (msi_addr & (_PAGE - 1)):#x}")
        return iova + (msi_addr & (_PAGE - 1))

    def _install_msi(self, op: str, dev: VfioDevice) -> None:
        """Map the device's doorbell pages in its paging domain (again after an attach: `iommufd_group_setup_msi`)."""
        h = dev.hwpt.viommu.parent if isinstance(dev.hwpt, _HwptNested) else dev.hwpt
        for page in dev.msi_pages:
            if page not in h.msi_installed:
                self._drv(op, lambda p=page: self.driver.map(h.domain, self.msi_iovas[p], p, _PAGE, PERM_W,
                                                             mmio=True))
                h.msi_installed.add(page)

    # -- vIOMMU / vDEVICE ----------------------------------------------------------------------------------
    def viommu_alloc(self, dev_id: int, hwpt_id: int, type: int = IOMMU_VIOMMU_TYPE_ARM_SMMUV3) -> int:
        """IOMMU_VIOMMU_ALLOC over a nest-parent HWPT. The VMID comes from the policy's `nested_vmid`: with
        `shared`/`restricted`/`split` it is the VM's pinned KVM VMID, so the device needs a KVM linked
        before bind (ENODEV otherwise); a pin limit or an exhausted space gives ENOSPC."""
        op = "viommu_alloc"
        dev = self._dev(op, dev_id)
        if type != IOMMU_VIOMMU_TYPE_ARM_SMMUV3:
            raise self._fail(_errno.EOPNOTSUPP, op, f"vIOMMU type {type} not supported")
        if not self.driver.caps.nesting:
            raise self._fail(_errno.EOPNOTSUPP, op, "the SMMU cannot nest (needs IDR0.S1P and S2P)")
        parent = self._get(op, hwpt_id, _HwptPaging)
        if not parent.nest_parent:
            raise self._fail(_errno.EINVAL, op, f"HWPT {hwpt_id} is not a nest parent")
        policy = self.driver.vmid_policy
        kvm = dev.bound_kvm
        if policy.needs_kvm and kvm is None:
            late = " (a KVM was added after bind: too late)" if dev.kvm is not None else ""
            raise self._fail(_errno.ENODEV, op, f"{dev.name} was bound without a KVM{late}; the "
                             f"{policy.name!r} VMID policy needs the VM's pinned VMID: do KVM_DEV_VFIO_FILE_ADD "
                             "before VFIO_DEVICE_BIND_IOMMUFD")
        v = _Viommu(parent, 0, None)
        owner = kvm if kvm is not None else v
        try:
            vmid = policy.nested_vmid(owner)
        except PolicyError as e:
            raise self._fail(e.errno, op, f"no VMID: {e}") from None
        v.vmid, v.owner = vmid, owner
        parent.domain.extra_vmids[vmid] = v
        parent.viommus.append(v)
        self._add(v)
        self.driver._trace_vmid("viommu", owner, vmid)
        self._ok(op, v.id, f"vmid={vmid:#x}")
        return v.id

    def vdevice_alloc(self, viommu_id: int, dev_id: int, virt_id: int) -> int:
        """IOMMU_VDEVICE_ALLOC: the guest's StreamID `virt_id` (vSID) for this device on the vIOMMU."""
        op = "vdevice_alloc"
        v = self._get(op, viommu_id, _Viommu)
        dev = self._dev(op, dev_id)
        if not 0 <= virt_id < 1 << 32:
            raise self._fail(_errno.EINVAL, op, f"vSID {virt_id:#x} does not fit 32 bits")
        if virt_id in v.vdevs:
            raise self._fail(_errno.EEXIST, op, f"vSID {virt_id:#x} already used on vIOMMU {viommu_id}")
        if any(x.dev is dev for x in v.vdevs.values()):
            raise self._fail(_errno.EEXIST, op, f"{dev.name} already has a vDEVICE on vIOMMU {viommu_id}")
        vd = _Vdevice(v, dev, virt_id)
        v.vdevs[virt_id] = vd
        i = self._add(vd)
        if isinstance(dev.hwpt, _HwptNested) and dev.hwpt.viommu is v:
            dev.master.vmaster = _VMaster(v, virt_id)
        self._ok(op, i, f"vsid {virt_id:#x} -> sid {dev.sid:#x}")
        return i

    # -- invalidation ---------------------------------------------------------------------------------------
    def convert_cmd(self, v: _Viommu, raw: bytes) -> bytes:
        """`arm_vsmmu_convert_user_cmd` for one 16-byte guest command (IommufdError(EIO) if refused)."""
        c = cmds.decode(raw)
        w = int.from_bytes(raw, "little")
        if c.name == "TLBI_NSNH_ALL":
            return cmds.encode("TLBI_NH_ALL", vmid=v.vmid)
        if c.name in ("TLBI_NH_VA", "TLBI_NH_VAA", "TLBI_NH_ALL", "TLBI_NH_ASID"):
            f = cmds.LAYOUTS[c.name].by_name["vmid"]
            return f.put(w & ~f.mask, v.vmid).to_bytes(16, "little")
        if c.name in ("ATC_INV", "CFGI_CD", "CFGI_CD_ALL"):
            vd = v.vdevs.get(c.sid)
            if vd is None:
                raise IommufdError(_errno.EIO, f"{c.name} names vSID {c.sid:#x}, which has no vDEVICE on this "
                                   "vIOMMU")
            f = cmds.LAYOUTS[c.name].by_name["sid"]
            return f.put(w & ~f.mask, vd.dev.sid).to_bytes(16, "little")
        raise IommufdError(_errno.EIO, f"opcode {c.opcode:#04x} ({c.name}) is not a guest invalidation command")

    def hwpt_invalidate(self, hwpt_id: int, entries: Iterable[bytes | Sequence[int]],
                        data_type: int = IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3) -> int:
        """IOMMU_HWPT_INVALIDATE on a vIOMMU id: convert and issue the guest's commands; returns entry_num.
        On a refused entry raises IommufdError(EIO) with `.entry_num` = the entries processed before it."""
        op = "hwpt_invalidate"
        obj = self._get(op, hwpt_id, _Viommu, _HwptNested, _HwptPaging)
        if isinstance(obj, _HwptNested):
            raise self._fail(_errno.EOPNOTSUPP, op, "SMMUv3 nested HWPTs have no cache_invalidate_user; "
                             "invalidate through the vIOMMU")
        if isinstance(obj, _HwptPaging):
            raise self._fail(_errno.EOPNOTSUPP, op, "kernel-managed HWPTs are invalidated by the kernel")
        if data_type != IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3:
            raise self._fail(_errno.EINVAL, op, f"data_type {data_type} is not "
                             "IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3")
        v: _Viommu = obj
        raws = []
        for e in entries:
            if isinstance(e, (bytes, bytearray)):
                if len(e) != 16:
                    raise self._fail(_errno.EINVAL, op, f"an entry is 16 bytes (cmd[2]), got {len(e)}")
                raws.append(bytes(e))
            else:
                raws.append(int(e[0]).to_bytes(8, "little") + int(e[1]).to_bytes(8, "little"))
        done = 0
        batch: list[bytes] = []
        err: IommufdError | None = None
        for raw in raws:
            try:
                batch.append(self.convert_cmd(v, raw))
            except IommufdError as e:
                err = e
                break
            if len(batch) == CMDQ_BATCH_ENTRIES - 1:
                self.driver.submit(batch)
                done += len(batch)
                batch = []
        if batch:
            self.driver.submit(batch)
            done += len(batch)
        if self._on("iommufd_invalidate"):
            self.tracer.emit("iommufd_invalidate", viommu=v.id, n=len(raws), processed=done,
                             errno=err.errno if err else 0)
        if err is not None:
            raise self._fail(_errno.EIO, op, f"entry {done}: {err.strerror}", entry_num=done)
        return done

    # -- vEVENTQ ---------------------------------------------------------------------------------------------
    def veventq_alloc(self, viommu_id: int, type: int = IOMMU_VEVENTQ_TYPE_ARM_SMMUV3,
                      depth: int = 64) -> tuple[int, VEventQ]:
        """IOMMU_VEVENTQ_ALLOC -> (id, queue); the queue object stands for the returned fd."""
        op = "veventq_alloc"
        v = self._get(op, viommu_id, _Viommu)
        if type != IOMMU_VEVENTQ_TYPE_ARM_SMMUV3:
            raise self._fail(_errno.EOPNOTSUPP, op, f"vEVENTQ type {type} not supported")
        if depth <= 0:
            raise self._fail(_errno.EINVAL, op, "veventq_depth must be positive")
        if v.veventq is not None:
            raise self._fail(_errno.EEXIST, op, f"vIOMMU {viommu_id} already has a vEVENTQ of this type")
        q = VEventQ(self, v, depth)
        v.veventq = q
        i = self._add(q)
        self._ok(op, i)
        return i, q

    # -- fault objects ---------------------------------------------------------------------------------------
    def fault_queue_alloc(self, flags: int = 0, max_groups: int = MAX_FAULT_GROUPS) -> tuple[int, FaultQueue]:
        """IOMMU_FAULT_QUEUE_ALLOC -> (out_fault_id, the object standing for out_fault_fd). `max_groups` is the
        model's bound on unread groups (module docstring)."""
        op = "fault_queue_alloc"
        if flags:
            raise self._fail(_errno.EOPNOTSUPP, op, f"flags {flags:#x} must be 0")
        if max_groups <= 0:
            raise self._fail(_errno.EINVAL, op, "max_groups must be positive")
        q = FaultQueue(self, max_groups)
        i = self._add(q)
        self._ok(op, i)
        return i, q

    # -- destroy ---------------------------------------------------------------------------------------------
    def destroy(self, obj_id: int) -> None:
        """IOMMU_DESTROY; EBUSY while something depends on the object."""
        op = "destroy"
        o = self._get(op, obj_id)
        if isinstance(o, _Ioas):
            if o.hwpts:
                raise self._fail(_errno.EBUSY, op, f"IOAS {obj_id} has {len(o.hwpts)} HWPT(s)")
        elif isinstance(o, _HwptPaging):
            if o.devices or o.viommus:
                raise self._fail(_errno.EBUSY, op, f"HWPT {obj_id} has devices or vIOMMUs")
            self._drv(op, self.driver.free_domain, o.domain)
            o.ioas.hwpts.remove(o)
        elif isinstance(o, _HwptNested):
            if o.devices:
                raise self._fail(_errno.EBUSY, op, f"nested HWPT {obj_id} is attached")
            o.viommu.nested.remove(o)
            self._drv(op, self.driver.free_domain, o.domain)
            if o.fault is not None:
                o.fault.users -= 1
        elif isinstance(o, FaultQueue):
            if o.users:
                raise self._fail(_errno.EBUSY, op, f"fault object {obj_id} is used by {o.users} HWPT(s)")
        elif isinstance(o, _Vdevice):
            del o.viommu.vdevs[o.virt_id]
            if o.dev.master.vmaster is not None and o.dev.master.vmaster.viommu is o.viommu:
                o.dev.master.vmaster = None
        elif isinstance(o, VEventQ):
            o.viommu.veventq = None
        elif isinstance(o, _Viommu):
            if o.vdevs or o.nested or o.veventq is not None:
                raise self._fail(_errno.EBUSY, op, f"vIOMMU {obj_id} has vDEVICEs, nested HWPTs or a vEVENTQ")
            self.driver.tlbi_vmid(o.vmid)                      # its entries go before the VMID can be reused
            del o.parent.domain.extra_vmids[o.vmid]
            o.parent.viommus.remove(o)
            self.driver.vmid_policy.release(o.owner, o.vmid)
            self.driver._trace_vmid("release", o.owner, o.vmid)
        del self.objects[obj_id]
        self._ok(op, obj_id)

    # -- introspection for tests and the VMM ------------------------------------------------------------------
    def viommu_vmid(self, viommu_id: int) -> int:
        return self._get("viommu_vmid", viommu_id, _Viommu).vmid

    def hwpt_domain(self, hwpt_id: int) -> Any:
        return self._get("hwpt_domain", hwpt_id, _HwptPaging, _HwptNested).domain
