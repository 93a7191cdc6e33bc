/*
 * A minimal guest driver for the GICv3 ITS and LPIs (IHI 0069 chapters 5, 6 and 12) of QEMU's virt board:
 * the ITS at 0x0808_0000 (GITS_TRANSLATER at 0x0809_0040), this CPU's redistributor from gic.h.
 *
 * its_init() sets up, in this order: the LPI configuration table (GICR_PROPBASER, IDbits 13: LPIs 8192..16383,
 * every LPI disabled) and this CPU's pending table (GICR_PENDBASER), GICR_CTLR.EnableLPIs; the ITS's Device and
 * Collection tables (the GITS_BASER<n> whose Type says so, flat, 64 KiB pages, the Entry_Size the ITS reports),
 * the command queue (GITS_CBASER, 4 KiB: 128 commands), GITS_CTLR.Enabled. The tables live in the image's .bss,
 * so their addresses are IPAs (MMU off or identity-mapped).
 *
 * Commands as Linux's irq-gic-v3-its.c encodes them (its_encode_*): MAPD, MAPC (RDbase = the processor number:
 * GITS_TYPER.PTA = 0 on QEMU and here), MAPTI, INT, INV, INVALL, SYNC; its_cmd waits until GITS_CREADR passes the
 * command and returns -1 when the queue stalls (GITS_CREADR.Stalled) or does not move.
 * lpi_config(intid, prio, enable) writes the LPI's configuration byte (priority [7:2], bit 1 RES1, Enable); the
 * ITS caches it until INV / INVALL.
 *
 * Single CPU for the tables' set-up; not provided: two-level tables, MOVI/MOVALL/DISCARD, GICv4.
 */
#ifndef GUEST_ITS_H
#define GUEST_ITS_H

#include "guest.h"

#define GITS_BASE 0x08080000UL
#define GITS_TRANSLATER_ADDR (GITS_BASE + 0x10040UL)
#define GITS_CTLR 0x0000
#define GITS_TYPER 0x0008
#define GITS_CBASER 0x0080
#define GITS_CWRITER 0x0088
#define GITS_CREADR 0x0090
#define GITS_BASER(n) (0x0100 + 8 * (n))

#define GICR_CTLR 0x0000
#define GICR_TYPER 0x0008
#define GICR_PROPBASER 0x0070
#define GICR_PENDBASER 0x0078

#define LPI_BASE 8192
#define LPI_ID_BITS 14                 /* GICR_PROPBASER.IDbits + 1: INTIDs below 16384 */
#define LPI_NR (1u << LPI_ID_BITS)
#define LPI_PROP_RES1 (1u << 1)
#define LPI_PROP_ENABLED (1u << 0)

int its_init(void);
int its_mapd(u32 devid, int event_bits, void *itt);     /* an ITT of 2^event_bits events (256-byte aligned) */
int its_unmapd(u32 devid);
int its_mapc(u16 icid, u32 cpu);
int its_mapti(u32 devid, u32 eventid, u32 intid, u16 icid);
int its_inv(u32 devid, u32 eventid);
int its_cmd_int(u32 devid, u32 eventid);                 /* INT: the event as if its MSI had arrived */
int its_invall(u16 icid);
int its_sync(u32 cpu);
void lpi_config(u32 intid, u8 prio, bool enable);
u32 its_itt_entry_size(void);                            /* GITS_TYPER.ITT_entry_size + 1 */
u64 its_cmd_errors(void);                                /* commands that stalled the queue or timed out */

#endif
