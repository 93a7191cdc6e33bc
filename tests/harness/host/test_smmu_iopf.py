"""The host driver sets the stall, ATS and HTTU bits when asked (Linux arm_smmu_make_s1_cd / _sva_cd,
arm_smmu_make_cdtable_ste: CD.S with STE.S1STALLD=0 for a master that may stall, forced with
IDR0.STALL_MODEL=0b10; CD.HA/HD as far as IDR0.HTTU allows; STE.EATS), and the model's behaviour is reachable
through it: a stalled DMA is resumed by the host's CMD_RESUME, the device's writes mark the host tables dirty.

Here the master has no I/O page faults enabled (`enable_iopf`), so the driver leaves the stall record in its log
and the test plays the iopf side, as `arm_smmu_handle_event` + `arm_smmu_page_response` would; the driver's own
iopf path is tests/harness/host/test_iopf.py."""
from __future__ import annotations

from devmodel.dmatest import CMD_READ64, STATUS_DONE, STATUS_STALLED
from devmodel.pagetable import PERM_R
from devmodel.smmuv3 import cd as CD
from devmodel.smmuv3 import commands as C
from devmodel.smmuv3.fault import EventType
from devmodel.smmuv3.regs import SmmuFeatures
from smmu_env import Board

SID = 0x20
AP2, DBM = 1 << 7, 1 << 51
CMDQ_RESUME_0_RESP_RETRY = 1                                 # Linux arm-smmu-v3.h


def test_driver_probes_httu_and_pri() -> None:
    b = Board(SmmuFeatures(httu=2, ats=True, pri=True))
    assert (b.driver.caps.httu, b.driver.caps.pri) == (2, True)
    assert Board().driver.caps.httu == 0


def test_s1_domain_bits_when_asked() -> None:
    b = Board(SmmuFeatures(stall_model=0, httu=1, ats=True))
    drv = b.driver
    m = drv.probe_device(SID)
    d = drv.alloc_s1("sva", httu=True, stall=True, ats=True)
    drv.attach(m, d)
    cd = CD.decode(b.bus.read_bytes(d.cd_pa, 64))
    ste = drv.read_ste(m)
    assert (cd.s, cd.ha, cd.hd, ste.s1stalld, ste.eats) == (1, 1, 0, 0, 1)     # HTTU=1: access flag only
    plain = drv.alloc_s1("plain")
    drv.attach(m, plain)
    cd = CD.decode(b.bus.read_bytes(plain.cd_pa, 64))
    assert (cd.s, cd.ha, drv.read_ste(m).s1stalld, drv.read_ste(m).eats) == (0, 0, 1, 0)
    forced = Board(SmmuFeatures(stall_model=2))
    fd = forced.driver.alloc_s1("f")
    fm = forced.driver.probe_device(SID)
    forced.driver.attach(fm, fd)                             # CD.S=0 would be ILLEGAL (C_BAD_CD)
    assert CD.decode(forced.bus.read_bytes(fd.cd_pa, 64)).s == 1
    forced.dmadev(SID)
    forced.driver.map(fd, 0x1000, forced.mem.alloc(4096), 4096)
    assert forced.dma_read(SID, 0x1000)[0] == STATUS_DONE


def s1_board(features: SmmuFeatures, **asked: bool):
    """A board whose device SID is attached to a host stage-1 domain allocated with `asked` bits."""
    b = Board(features)
    m = b.driver.probe_device(SID)
    d = b.driver.alloc_s1("s1", **asked)
    b.driver.attach(m, d)
    return b, b.driver, d


def test_stalled_dma_resumed_by_the_host() -> None:
    b, drv, d = s1_board(SmmuFeatures(stall_model=0), stall=True)
    dev = b.dmadev(SID)
    dev.write(0x10, 0x4000, 8)
    dev.write(0x1C, CMD_READ64, 4)
    assert dev.read(0x04, 4) == STATUS_STALLED
    (ev,) = [e for e in drv.host_events if e.stall]          # drained by the EVTQ MSI handler
    assert ev.type == EventType.F_TRANSLATION and ev.sid == SID and ev.input_addr == 0x4000
    page = b.mem.alloc(4096)
    b.bus.write64(page, 0xFEED)
    drv.map(d, 0x4000, page, 4096)
    drv.submit([C.encode("RESUME", sid=SID, stag=ev.stag, resp=CMDQ_RESUME_0_RESP_RETRY)])
    assert dev.read(0x04, 4) == STATUS_DONE and dev.read(0x20, 8) == 0xFEED and not drv.cmdq_errors


def test_device_write_marks_the_host_tables_dirty() -> None:
    b, drv, d = s1_board(SmmuFeatures(httu=2), httu=True)
    page = b.mem.alloc(4096)
    drv.map(d, 0x8000, page, 4096, PERM_R)
    ref = d.builder.update(0x8000, set_bits=DBM)             # writable-clean, as a dirty-tracking domain maps
    b.dmadev(SID)
    assert b.dma_write(SID, 0x8008, 0xAB) == (STATUS_DONE, 0)
    assert not b.bus.read64(ref.addr) & AP2 and b.bus.read64(page + 8) == 0xAB
    assert b.dma_read(SID, 0x8008)[0] == STATUS_DONE and drv.host_events == []
