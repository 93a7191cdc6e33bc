"""Trace events of the GIC models (one module, so the trace catalogue names it once).

Names follow QEMU's `hw/intc/trace-events` where QEMU has an equivalent (`gic_set_irq`, `gic_acknowledge_irq`,
`gicv3_icc_iar1_read`, `gicv3_its_cmd_mapd`, ...); fields are named, values are plain ints.
"""
from __future__ import annotations

from ..trace import define

# -- GICv2 (QEMU hw/intc/arm_gic.c) ---------------------------------------------------------------------------
define("gic_set_irq", ("irq", "level", "cpu"), "GICv2 input line change (SPI: cpu is None; PPI: its CPU)")
define("gic_update_set_irq", ("cpu", "irq", "fiq"), "GICv2 CPU interface outputs changed")
define("gic_acknowledge_irq", ("cpu", "irq", "value"), "GICv2 GICC_IAR/AIAR read that acknowledged an interrupt")
define("gic_eoi", ("cpu", "irq", "deactivated"), "GICv2 GICC_EOIR/AEOIR write (priority drop)")
define("gic_deactivate", ("cpu", "irq"), "GICv2 GICC_DIR write")
define("gic_sgi", ("src", "irq", "targets"), "GICv2 SGI generated through GICD_SGIR (targets: CPU bit mask)")
define("gic_dist_read", ("cpu", "offset", "value", "size"), "GICv2 distributor MMIO read")
define("gic_dist_write", ("cpu", "offset", "value", "size"), "GICv2 distributor MMIO write")
define("gic_cpu_read", ("cpu", "offset", "value", "size"), "GICv2 CPU interface MMIO read")
define("gic_cpu_write", ("cpu", "offset", "value", "size"), "GICv2 CPU interface MMIO write")
define("gic_bad_access", ("cpu", "frame", "kind", "offset", "size"), "GICv2 access to no register (RAZ/WI)")

# -- GICv3 distributor / redistributors / CPU interface (QEMU hw/intc/arm_gicv3*.c) --------------------------
define("gicv3_dist_set_irq", ("irq", "level"), "GICv3 SPI input line change")
define("gicv3_redist_set_irq", ("cpu", "irq", "level"), "GICv3 PPI input line change")
define("gicv3_redist_send_sgi", ("cpu", "irq", "group"), "GICv3 SGI set pending at a redistributor")
define("gicv3_redist_set_lpi", ("cpu", "irq", "level"), "GICv3 LPI set or cleared pending at a redistributor")
define("gicv3_dist_read", ("offset", "value", "size"), "GICv3 distributor MMIO read")
define("gicv3_dist_write", ("offset", "value", "size"), "GICv3 distributor MMIO write")
define("gicv3_redist_read", ("cpu", "offset", "value", "size"), "GICv3 redistributor MMIO read")
define("gicv3_redist_write", ("cpu", "offset", "value", "size"), "GICv3 redistributor MMIO write")
define("gicv3_bad_access", ("cpu", "frame", "kind", "offset", "size"), "GICv3 access to no register (RAZ/WI)")
define("gicv3_cpuif_set_irqs", ("cpu", "irq", "fiq"), "GICv3 CPU interface outputs changed")
define("gicv3_icc_read", ("cpu", "reg", "value"), "ICC_* system register read (other than IAR)")
define("gicv3_icc_write", ("cpu", "reg", "value"), "ICC_* system register write (other than EOIR/DIR/SGI)")
define("gicv3_icc_iar0_read", ("cpu", "value"), "ICC_IAR0_EL1 read")
define("gicv3_icc_iar1_read", ("cpu", "value"), "ICC_IAR1_EL1 read")
define("gicv3_icc_eoir_write", ("cpu", "group", "value"), "ICC_EOIR0/1_EL1 write")
define("gicv3_icc_dir_write", ("cpu", "value"), "ICC_DIR_EL1 write")
define("gicv3_icc_generate_sgi", ("cpu", "irq", "irm", "group", "targets"),
       "ICC_SGI0R/SGI1R/ASGI1R_EL1 write (targets: list of CPUs reached)")

# -- GICv3 ITS (QEMU hw/intc/arm_gicv3_its.c) ----------------------------------------------------------------
define("gicv3_its_read", ("offset", "value", "size"), "ITS control frame MMIO read")
define("gicv3_its_write", ("offset", "value", "size"), "ITS control frame MMIO write")
define("gicv3_its_translation_write", ("devid", "eventid", "size"), "GITS_TRANSLATER write (an MSI)")
define("gicv3_its_process_command", ("rd_offset", "cmd"), "ITS command read from the queue")
define("gicv3_its_cmd_mapd", ("devid", "size", "ittaddr", "valid"), "MAPD")
define("gicv3_its_cmd_mapc", ("icid", "rdbase", "valid"), "MAPC")
define("gicv3_its_cmd_mapti", ("devid", "eventid", "icid", "intid"), "MAPTI / MAPI")
define("gicv3_its_cmd_movi", ("devid", "eventid", "icid"), "MOVI")
define("gicv3_its_cmd_movall", ("rd1", "rd2"), "MOVALL")
define("gicv3_its_cmd_discard", ("devid", "eventid"), "DISCARD")
define("gicv3_its_cmd_int", ("devid", "eventid"), "INT")
define("gicv3_its_cmd_clear", ("devid", "eventid"), "CLEAR")
define("gicv3_its_cmd_inv", ("devid", "eventid"), "INV")
define("gicv3_its_cmd_invall", ("icid",), "INVALL")
define("gicv3_its_cmd_sync", ("rdbase",), "SYNC")
define("gicv3_its_cmd_error", ("cmd", "code", "reason"),
       "ITS command error: the command is ignored (code: IHI 0069 encoding, as Linux's E_ITS_*)")
define("gicv3_its_cmdq_stall", ("rd_offset", "reason"), "ITS command queue stalled (GITS_CREADR.Stalled=1)")
define("gicv3_its_translation_error", ("devid", "eventid", "reason"), "an MSI that maps to no LPI (dropped)")
define("gicv3_its_lpi", ("devid", "eventid", "intid", "cpu"), "an MSI or INT set an LPI pending")
