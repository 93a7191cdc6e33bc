"""qemu-system-aarch64 7.2 as the oracle of the virtio-mmio transport, the split virtqueue and the console.

guests/virtio_oracle.c runs under QEMU with the console arm/run gives kvm-unit-tests and prints every access
it makes; the test replays the transcript on 32 `VirtioMmio` transports (the console on the last one, where
QEMU virt puts the first virtio device) and compares every value read, register and memory alike, then the
exit status chr-testdev gives. Both interfaces: Version 1 (QEMU's default) and Version 2.

Where this model follows the spec and QEMU 7.2 does not, the difference is listed in DEVIATIONS with its
reason, and each listed deviation must show up (so the list stays true); anything else that differs fails.
"""
from __future__ import annotations

import functools
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from devmodel.virtio import ChrTestdev, Status, VirtioConsole, VirtioMmio
from devmodel.virtio.constants import INT_CONFIG, INT_VRING
from devmodel.virtio.mmio import VIRT_NUM_TRANSPORTS, virt_transport_for
from devmodel.virtio.ring import RingFault

from .driver import Guest

QEMU = shutil.which("qemu-system-aarch64")
GUEST_SRC = Path(__file__).parent / "guests" / "virtio_oracle.c"
CONSOLE_TRANSPORT = virt_transport_for(0)          # QEMU virt: the first -device virtio-* is on the last one
NR_TRANSPORTS = VIRT_NUM_TRANSPORTS

pytestmark = [pytest.mark.qemu,
              pytest.mark.skipif(QEMU is None, reason="qemu-system-aarch64 not installed "
                                                      "(Debian: apt-get install qemu-system-arm)")]

DEVIATIONS = {
    "isr_bit0": "QEMU sets InterruptStatus bit 0 with every configuration change notification "
                "(virtio_notify_config sets 0x3) and notifies after a pop that failed; spec 4.2.2.1: bits "
                "that represent no event MUST be zero",
    "features_ok": "QEMU keeps FEATURES_OK for features it did not offer or without VERSION_1; spec 2.2.2: "
                   "the device MUST fail to set FEATURES_OK for a feature set it does not accept",
    "features_sel": "QEMU treats DeviceFeaturesSel >= 2 as 1; spec 4.2.2: the selector picks bits sel*32..",
    "shm_base": "QEMU 7.2 reads SHMBase of a missing region as 0; spec 4.2.2: 0xffffffffffffffff",
    "block:available index jumps by 17":
        "QEMU's virtqueue_pop does not check the available index (its virtqueue_num_heads does, as Linux "
        "vhost does): it processes stale ring entries; here the device enters its error state",
    "block:buffer outside memory":
        "QEMU DMA-maps an address outside RAM through a bounce buffer (reads zeros); here a DMA the bus "
        "cannot serve is a device error, as for the DMA test device",
}
EXPECTED = {
    True: {"isr_bit0"},
    False: set(DEVIATIONS),
}
EXPECTED_EXIT = {True: 7, False: 11}          # "3q" and "5q": (code << 1) | 1


@functools.cache
def oracle_elf() -> Path:
    from harness.build import build_guest
    return build_guest([GUEST_SRC], name="virtio_oracle").path


CONSOLE = ("-device", "virtio-serial-device", "-device", "virtconsole,chardev=ctd", "-chardev", "testdev,id=ctd")


@functools.cache
def qemu_run(legacy: bool, devices: tuple[str, ...] = CONSOLE) -> subprocess.CompletedProcess:
    cmd = [QEMU, "-M", "virt", "-cpu", "max", "-m", "128M", "-nographic", "-no-reboot", "-nodefaults",
           "-monitor", "none", "-serial", "stdio", "-semihosting", *devices, "-kernel", str(oracle_elf())]
    if not legacy:
        cmd[1:1] = ["-global", "virtio-mmio.force-legacy=false"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


@dataclass
class Replay:
    legacy: bool
    guest: Guest = field(default_factory=Guest)
    testdev: ChrTestdev = field(default_factory=ChrTestdev)
    hit: set[str] = field(default_factory=set)
    mismatches: list[str] = field(default_factory=list)
    block: str = ""
    skipping: bool = False
    feature_sel: int = 0

    def __post_init__(self) -> None:
        self.console = VirtioConsole(self.guest.bus, self.testdev.write)
        self.transports = [VirtioMmio(self.console if t == CONSOLE_TRANSPORT else None, legacy=self.legacy)
                           for t in range(NR_TRANSPORTS)]

    def run(self, lines: list[str]) -> None:
        for n, line in enumerate(lines, 1):
            if self.testdev.exit_code is not None:
                self.mismatches.append(f"line {n}: the model's testdev ended the run before: {line}")
                return
            self.step(n, line.split())

    def step(self, n: int, w: list[str]) -> None:
        kind = w[0]
        if kind == "#":
            self.comment(" ".join(w[1:]))
            return
        args = [int(x, 16) for x in w[1:]]
        if kind in "RC":
            t, off, size, want = args
            got = self.transports[t].read(off + (0x100 if kind == "C" else 0), size)
            self.compare(n, w, t, off if kind == "R" else None, want, got)
        elif kind in "Wc":
            t, off, size, value = args
            if kind == "W" and off == 0x14:
                self.feature_sel = value
            if kind == "W" and off == 0x70 and value == 0:
                self.skipping = False
            self.transports[t].write(off + (0x100 if kind == "c" else 0), value, size)
        elif kind == "M":
            self.guest.bus.write_bytes(args[0], bytes(args[1:]))
        elif kind == "Z":
            self.guest.bus.write_bytes(args[0], bytes(args[1]))
        elif kind == "m":
            addr, size, want = args
            self.compare(n, w, None, None, want, self.guest.bus.read(addr, size))

    def comment(self, text: str) -> None:
        if text.startswith("hostile: "):
            self.block = text[len("hostile: "):]
            if f"block:{self.block}" in DEVIATIONS:
                self.skipping = True
                self.hit.add(f"block:{self.block}")

    def compare(self, n: int, w: list[str], t: int | None, reg: int | None, want: int, got: int) -> None:
        if self.skipping:
            if reg == 0x70 and not got & Status.DEVICE_NEEDS_RESET:
                self.mismatches.append(f"line {n}: {' '.join(w)}: the model should be in its error state")
            return
        if got == want:
            return
        why = self.deviation(reg, want, got)
        if why:
            self.hit.add(why)
        else:
            self.mismatches.append(f"line {n}: {' '.join(w)}: model read {got:#x}")

    def deviation(self, reg: int | None, qemu: int, model: int) -> str | None:
        if reg == 0x60 and model == qemu & ~INT_VRING and (model & INT_CONFIG or self.console.broken):
            return "isr_bit0"
        if reg == 0x70 and qemu & Status.FEATURES_OK and model == qemu & ~Status.FEATURES_OK:
            return "features_ok"
        if reg == 0x10 and not self.legacy and self.feature_sel >= 2 and model == 0:
            return "features_sel"
        if reg in (0xB8, 0xBC) and qemu == 0 and model == 0xFFFF_FFFF:
            return "shm_base"
        return None


@pytest.mark.parametrize("legacy", [True, False], ids=["version1", "version2"])
def test_model_reads_what_qemu_reads(legacy):
    q = qemu_run(legacy)
    assert q.returncode == EXPECTED_EXIT[legacy], (q.returncode, q.stderr, q.stdout[-2000:])
    lines = [ln for ln in q.stdout.replace("\r\n", "\n").splitlines() if ln]
    assert f"# console on transport {CONSOLE_TRANSPORT}" in lines
    r = Replay(legacy)
    r.run(lines)
    assert not r.mismatches, "\n".join(r.mismatches[:20])
    assert r.hit == EXPECTED[legacy], {k: DEVIATIONS[k] for k in r.hit ^ EXPECTED[legacy]}
    assert r.testdev.exit_status == q.returncode


def test_version2_hostile_drivers_hit_each_ring_check_once():
    q = qemu_run(False)
    r = Replay(False)
    r.run([ln for ln in q.stdout.splitlines() if ln])
    found = {reason for reason in r.console.errors if reason in {f.value for f in RingFault}}
    assert found == {RingFault.HEAD_RANGE.value, RingFault.LOOP.value, RingFault.AVAIL_JUMP.value,
                     RingFault.BUFFER_UNREACHABLE.value, RingFault.ORDER.value, RingFault.NEXT_RANGE.value,
                     RingFault.INDIRECT_SIZE.value}
    assert all(r.console.errors[reason] == 1 for reason in found)
    # the five QEMU detects too, in its words
    for msg in ("Guest says index 20 is available", "Looped descriptor", "Incorrect order for descriptors",
                "Desc next is 16", "Invalid size for indirect buffer table"):
        assert msg in q.stderr


def test_qemu_virt_plugs_devices_from_the_last_transport_down():
    q = qemu_run(True, ("-device", "virtio-rng-device") + CONSOLE)
    ids = {}
    for line in q.stdout.splitlines():
        w = line.split()
        if w[:1] == ["R"] and w[2] == "8":
            ids[int(w[1], 16)] = int(w[4], 16)
    assert len(ids) == NR_TRANSPORTS
    assert {t: d for t, d in ids.items() if d} == {virt_transport_for(0): 4, virt_transport_for(1): 3}
    assert q.returncode == EXPECTED_EXIT[True]                  # the same script, on transport 30
