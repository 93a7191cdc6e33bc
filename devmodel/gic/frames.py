"""The GICv2 frame sizes (IHI 0048B 4.1, tables 4-1 and 4-2: the distributor's registers span 4 KiB, the CPU
interface's 8 KiB, GICC_DIR at 0x1000), apart from the model: a board maps the frames before its GIC's model is
built (harness/gic.py builds a GICv2 model at its first use)."""

__all__ = ["GICD_SIZE", "GICC_SIZE"]

GICD_SIZE = 0x1000
GICC_SIZE = 0x2000
