"""The GICv2 frame sizes, apart from the model: a board maps the frames before its GIC's model is built
(harness/gic.py builds a GICv2 model at its first use). The distributor's register map ends below 4 KiB and the
CPU interface's reaches GICC_DIR at 0x1000 (IHI 0048B 4.1), so 4 KiB and 8 KiB, the frames QEMU 7.2's virt
board maps (harness/gic.py: checked by a guest on QEMU)."""

__all__ = ["GICD_SIZE", "GICC_SIZE"]

GICD_SIZE = 0x1000
GICC_SIZE = 0x2000
