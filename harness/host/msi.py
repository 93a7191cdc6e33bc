"""The host's MSI path for assigned devices: the host ITS doorbell that device MSIs reach through the SMMU, and
the routes that take an MSI of a physical DeviceID to the ITS of the VM that owns the device.

On a KVM host without GICv4 this is several pieces: the physical ITS translates (DeviceID, EventID) to a host
LPI, VFIO's handler signals the vector's eventfd, and KVM's irqfd injects the MSI that the VMM registered for
it (KVM_SET_GSI_ROUTING, `kvm_irq_routing_msi` with KVM_MSI_VALID_DEVID: the guest's DeviceID) into the VM's
emulated ITS (Linux `vgic_its_inject_msi`). With GICv4.1 the physical ITS does it alone (VMAPTI, KVM's
`kvm_vgic_v4_set_forwarding`). Here it is one step, `HostIts.write_from`: the DeviceID comes from the bus (the
requester ID of the write, never from the device's programming), a route exists only for the DeviceIDs the VMM
registered, and the EventID is the data the device wrote. So whatever a guest programs into its device, its
MSIs can only be events of its own devices in its own ITS:

* a DeviceID without a route (a device nobody assigned, or one whose route was removed) is dropped;
* the route names the VM's ITS and the guest's DeviceID for the device (its vSID, as the guest's msi-map
  says); the guest ITS's own translation then decides (unmapped events, EventIDs beyond the ITT, a disabled
  ITS: dropped with its `gicv3_its_translation_error`);
* anything that is not a 16/32-bit write of GITS_TRANSLATER is ignored and counted.

The host SMMU's own MSIs (event queue, GERROR, CMD_SYNC completion) are plain writes here (the host SMMU has
no requester ID on this board) and reach the host driver's handlers as before (`MsiDoorbell`). Counted in
`stats` and traced as `its_translate(dev, requester, eventid, vm, devid, outcome)`.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from devmodel.trace import NULL_TRACER, Tracer, define

from .smmu_driver import GITS_TRANSLATER, MsiDoorbell

__all__ = ["HostIts", "MsiRoute"]

define("its_translate", ("dev", "requester", "eventid", "vm", "devid", "outcome"),
       "an MSI at the host ITS doorbell: the route of its requester (outcome: lpi | dropped | unrouted)")


@dataclass(frozen=True)
class MsiRoute:
    """Where MSIs of one physical DeviceID go: `its` (the VM's devmodel Its), as the guest's `devid`."""
    its: Any
    devid: int
    owner: str


class HostIts(MsiDoorbell):
    """The host ITS's doorbell (`MsiDoorbell`) that also takes device MSIs (`Bus.write_from`) and routes them
    by DeviceID (see the module docstring)."""

    def __init__(self, tracer: Tracer = NULL_TRACER, name: str = "host.its") -> None:
        super().__init__()
        self.tracer, self.name = tracer, name
        self.routes: dict[int, MsiRoute] = {}
        self.stats: Counter[str] = Counter()

    def route(self, requester: int, its: Any, devid: int, owner: str = "") -> None:
        """The VMM's MSI route for an assigned device (physical DeviceID `requester`)."""
        self.routes[requester] = MsiRoute(its, devid, owner)

    def unroute(self, requester: int) -> None:
        self.routes.pop(requester, None)

    def write_from(self, offset: int, value: int, size: int, requester: int) -> None:
        if offset != GITS_TRANSLATER or size not in (2, 4):
            self.stats["bad_writes"] += 1
            return
        eventid = value & ((1 << (8 * size)) - 1)
        r = self.routes.get(requester)
        if r is None:
            outcome = "unrouted"
        else:
            outcome = "lpi" if r.its.msi(r.devid, eventid) else "dropped"
        self.stats[outcome] += 1
        if "its_translate" in self.tracer.enabled:
            self.tracer.emit("its_translate", dev=self.name, requester=requester, eventid=eventid,
                             vm=r.owner if r else "", devid=r.devid if r else -1, outcome=outcome)
