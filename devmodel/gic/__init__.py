"""Interrupt controllers as pure device models: GICv2 (IHI 0048B), GICv3 with LPIs and the GICv3 ITS
(IHI 0069). See docs/gic.md for the layout, the API the harness glue uses and what is not modelled."""
from .gicv2 import GICC_SIZE, GICD_SIZE, GicV2, GicV2CpuInterface
from .gicv3 import GICD_V3_SIZE, GicV3, qemu_virt_affinity
from .gicv3_cpuif import ICC_BY_NAME, ICC_SYSREGS, GicV3CpuInterface, SysReg
from .gicv3_redist import GICR_FRAME, Redistributor
from .its import GITS_TRANSLATER, ITS_SIZE, Its, ItsCmdError, ItsDoorbell

__all__ = ["GicV2", "GicV2CpuInterface", "GICD_SIZE", "GICC_SIZE", "GicV3", "GICD_V3_SIZE", "GicV3CpuInterface",
           "Redistributor", "GICR_FRAME", "SysReg", "ICC_SYSREGS", "ICC_BY_NAME", "qemu_virt_affinity", "Its",
           "ItsDoorbell", "ItsCmdError", "ITS_SIZE", "GITS_TRANSLATER"]
