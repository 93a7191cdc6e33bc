"""A hostile guest against the VMM's virtio-iommu (harness/viommu.py over devmodel.virtio.iommu and the host's
iommufd), seeded: random ATTACH (bypass, reserved flags), DETACH, MAP/UNMAP (RAM, the RAM's last page, MMIO,
beyond RAM, wrapping ranges, any flags), PROBE, ATTACH_TABLE (PGT_ARM with random TCR/MAIR, PST_ARM with random
CD tables), INVALIDATE of every scope with garbage, truncated requests, short or oversized reply buffers,
config.bypass writes (the illegal 2 too) and the assigned device's DMA, for each VMID policy. Nothing raises
in Python, and every IOAS the VMM created maps only this VM's RAM (its stage-2 IOAS: RAM and the VMM's CD
page): a guest request never maps host memory outside it."""
from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "devmodel"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_viommu import EP, PAGE, RAM, RAM_SIZE, TCR, Env  # noqa: E402
from virtio.iommu_driver import (attach, attach_pgt_arm, attach_pst_arm, detach, invalidate, map_,  # noqa: E402
                                 probe, unmap)

DOMAINS = (1, 2, 3, 0xFFFF_FFFF)
ENDPOINTS = (EP, EP + 1, 0, 0xFFFF_FFFF)


def _request(r: random.Random, env: Env, pages: list[int]) -> bytes | None:
    """One random request (None: a config write or a DMA was done instead)."""
    d, ep = r.choice(DOMAINS), (r.choice(ENDPOINTS) if r.random() < 0.3 else EP)
    a = r.choice(pages + [0, RAM + RAM_SIZE - PAGE, RAM + RAM_SIZE, 0x0900_0000, 1 << 47])
    k = r.randrange(10)
    if k == 8:
        env.drv.set_config(36, r.choice((0, 1, 1, 0, 2)), 1)
        return None
    if k == 9:
        env.dma_read(r.choice((0, 0x10_0000, a)))
        return None
    return (lambda: attach(d, ep, flags=r.randrange(4)), lambda: detach(d, ep),
            lambda: map_(d, r.choice((0, 0x10_0000, 2**64 - PAGE)), r.choice((0xFFF, 0x10_0FFF, 2**64 - 1)), a,
                         flags=r.randrange(16)),
            lambda: unmap(d, r.choice((0, 0x10_0000)), r.choice((0xFFF, 0x10_0FFF, 2**64 - 1))),
            lambda: probe(ep),
            lambda: attach_pgt_arm(d, ep, r.randrange(1 << 16), r.choice((TCR, r.getrandbits(64))),
                                   r.choice(pages + [a]), mair=r.getrandbits(64)),
            lambda: attach_pst_arm(d, ep, r.choice(pages + [a]), s1cdmax=r.randrange(32), s1fmt=r.randrange(4)),
            lambda: invalidate(d, r.randrange(5), flags=r.randrange(4), pasid=r.randrange(3),
                               asid=r.randrange(1 << 16), virt_start=r.getrandbits(64)))[k]()


def _ioas_maps_stay_in_ram(env: Env) -> None:
    vm = env.vm
    low, high = vm.ram_pa, vm.ram_pa + vm.ram.size
    cds = env.vv.backend.cd_page
    for obj in env.host.ictx.objects.values():
        for iova, (length, pa, _perm) in getattr(obj, "maps", {}).items():
            in_ram = low <= pa and pa + length <= high
            cd_page = cds is not None and pa == cds.pa and length == PAGE
            assert in_ram or cd_page, f"IOAS maps IOVA {iova:#x} to PA {pa:#x} +{length:#x}, outside the VM's RAM"


@pytest.mark.parametrize("policy", ["shared", "split", "restricted"])
def test_random_requests_never_raise_and_map_only_the_vms_ram(policy):
    for seed in range(8):
        r = random.Random(seed)
        env = Env(policy)
        pages = [env.page(i) for i in range(4)]
        for _ in range(60):
            req = _request(r, env, pages)
            if req is None:
                continue
            if r.random() < 0.2:
                req = req[:r.randrange(len(req) + 1)]                  # truncated
            try:
                env.reqq.add([req], [r.choice((4, 4, 4, 512, 1))])
            except IndexError:                                         # the device stopped (NEEDS_RESET)
                break
            env.reqq.kick()
            env.reqq.used()
        _ioas_maps_stay_in_ram(env)
