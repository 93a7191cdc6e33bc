"""Interrupt controllers as pure device models: GICv2 (IHI 0048B), GICv3 with LPIs and the GICv3 ITS
(IHI 0069). See docs/gic.md for the layout, the API the harness glue uses and what is not modelled.

The names below import from here as ever; each submodule is imported on first use of one of its names
(PEP 562 `__getattr__`), so a GICv2 board does not pay for the GICv3 and ITS models at start-up."""
from importlib import import_module

__all__ = ["GicV2", "GicV2CpuInterface", "GICD_SIZE", "GICC_SIZE", "GicV3", "GICD_V3_SIZE", "GicV3CpuInterface",
           "Redistributor", "GICR_FRAME", "SysReg", "ICC_SYSREGS", "ICC_BY_NAME", "qemu_virt_affinity", "Its",
           "ItsDoorbell", "ItsCmdError", "ITS_SIZE", "GITS_TRANSLATER"]

_SUBMODULE = {name: mod for mod, names in (
    ("frames", ("GICC_SIZE", "GICD_SIZE")),
    ("gicv2", ("GicV2", "GicV2CpuInterface")),
    ("gicv3", ("GICD_V3_SIZE", "GicV3", "qemu_virt_affinity")),
    ("gicv3_cpuif", ("ICC_BY_NAME", "ICC_SYSREGS", "GicV3CpuInterface", "SysReg")),
    ("gicv3_redist", ("GICR_FRAME", "Redistributor")),
    ("its", ("GITS_TRANSLATER", "ITS_SIZE", "Its", "ItsCmdError", "ItsDoorbell"))) for name in names}


def __getattr__(name: str):
    mod = _SUBMODULE.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{mod}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
