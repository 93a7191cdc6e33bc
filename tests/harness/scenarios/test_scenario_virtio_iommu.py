"""The `virtio-iommu` scenario (seed 004): outcomes per mode x VMID policy, from the guest's DMAs through the
physical SMMU model behind the VMM's virtio-iommu (harness/viommu.py, guest_fw/scenarios/virtio_iommu.c).

Expected, as `sva-btm`: `map` and `table` fresh under every policy; `btm` (a VMM offering BTM whatever the
policy) stale at once under `private`, stale after a rollover under `unpinned`, fresh with the pinned ones.
"""
from __future__ import annotations

import json

import pytest

pytest.importorskip("unicorn")

from harness.cli import main  # noqa: E402
from harness.scenarios import POLICY_NAMES, REQUIRED_METRICS, run_scenario  # noqa: E402
from harness.scenarios.result import ScenarioResult  # noqa: E402
from harness.scenarios.virtio_iommu import run_mode  # noqa: E402

PINNED = ("split", "restricted", "shared")
ROUNDS = 6


def _check(r, policy):
    m = r.metrics
    pinned = policy in PINNED
    # map: MAP/UNMAP shadowed into a kernel-managed HWPT: never stale, BTM irrelevant
    assert m["map_stale_dma"] == 0 and m["map_rounds"] == ROUNDS and m["map_dma_faults"] == 0
    assert m["map_btm_offered"] == 0 and m["map_viommu_vmid"] is None
    assert m["map_requests"]["UNMAP:OK"] == ROUNDS and m["map_requests"]["MAP:OK"] == 2 * ROUNDS
    assert m["map_vm_exits_per_change"] == 2.0 and m["map_host_calls_per_change"] == 2.0   # UNMAP + MAP
    assert m["map_host_cmds_per_change"] >= 2.0          # the host's TLBI_NH_VA + CMD_SYNC of the unmap
    assert m["map_host_ops"] == {"ioas_map": {"calls": ROUNDS, "cmds": 0},
                                 "ioas_unmap": {"calls": ROUNDS, "cmds": 2 * ROUNDS}}
    # table: the VMM's safe offer: BTM only with the VM's pinned KVM VMID; otherwise INVALIDATE per change
    assert m["table_stale_dma"] == 0 and m["table_rounds"] == ROUNDS and m["table_dma_faults"] == 0
    assert m["table_btm_offered"] == int(pinned)
    assert m["table_requests"].get("INVALIDATE:OK", 0) == (0 if pinned else ROUNDS)
    assert m["table_vm_exits_per_change"] == (0.0 if pinned else 1.0)
    assert m["table_host_calls_per_change"] == (0.0 if pinned else 1.0)
    assert m["table_host_cmds_per_change"] == (0.0 if pinned else 2.0)     # TLBI_NH_VA + CMD_SYNC
    assert m["table_host_ops"] == ({} if pinned else {"hwpt_invalidate": {"calls": ROUNDS, "cmds": 2 * ROUNDS}})
    # btm: the naive VMM: BTM always offered, the guest relies on its broadcasts
    assert m["btm_btm_offered"] == 1 and m["btm_requests"].get("INVALIDATE:OK", 0) == 0
    assert m["btm_vm_exits_per_change"] == 0.0 and m["btm_rounds"] == ROUNDS
    if pinned:
        assert m["btm_stale_dma"] == 0 and r.ok, r.text()
    elif policy == "private":
        assert m["btm_stale_dma"] == ROUNDS and m["btm_first_stale_round"] == 0 and not r.ok
    else:                                               # unpinned: fresh until a rollover moved the VMID
        assert m["btm_stale_dma"] > 0 and m["btm_first_stale_round"] > 0 and m["btm_rollovers"] > 0
        assert not r.ok
    assert m["cross_vm_dma"] == 0 and m["pinned_vmid_changes"] == 0
    assert m["stale_dma"] == m["btm_stale_dma"]


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_virtio_iommu_every_mode_under_each_policy(policy):
    r = run_scenario("virtio-iommu", policy, 8)
    _check(r, policy)
    assert "btm" in r.verdict if not r.ok else "every DMA" in r.verdict


@pytest.mark.slow
@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_virtio_iommu_every_policy_16bit(policy):
    _check(run_scenario("virtio-iommu", policy, 16), policy)


def test_virtio_iommu_btm_is_stale_exactly_when_the_vmids_differ():
    """The mechanism: in `btm` mode a DMA after TLBI + DSB is stale exactly when the TLBI's VMID (the vCPU's)
    is not the one in the device's STE (the vIOMMU's)."""
    for policy in ("private", "unpinned", "shared"):
        res = ScenarioResult("virtio-iommu", policy, 8, 3)
        run_mode(res, "btm", rounds=ROUNDS, rollover_every=2, tracer=None)
        rounds = [n for n in res.notes if "rounds (round" in n]
        assert len(rounds) == 1
        for item in rounds[0].split(": ", 2)[2].split():
            _, vmids, outcome = item.split(":")
            cpu, ste = vmids.split("/")
            assert (outcome == "s") == (cpu != ste), (policy, item)


def test_a_map_guest_behaves_identically_with_the_extension_enabled():
    """The extension is off unless the VMM enables it; a MAP/UNMAP guest sees the same device either way."""
    out = {}
    for tables in (False, True):
        res = ScenarioResult("virtio-iommu", "shared", 8, 3)
        m = run_mode(res, "map", rounds=ROUNDS, rollover_every=2, tracer=None, page_tables=tables)
        # the VMM's state (its vIOMMU, its offer) differs; nothing the guest sees or does does
        out[tables] = {k: v for k, v in m.items() if k not in ("viommu_vmid", "btm_offered")}
    assert out[False] == out[True]
    assert out[False]["ok"] and out[False]["stale_dma"] == 0


def test_result_json_carries_the_cost_metrics():
    d = json.loads(run_scenario("virtio-iommu", "private", 8, mode="table").to_json())
    assert d["options"] == {"mode": "table"} and d["ok"]
    for k, t in REQUIRED_METRICS.items():
        assert isinstance(d["metrics"][k], t), k
    for k in ("vm_exits_per_change", "host_calls_per_change", "host_cmds_per_change", "stale_dma",
              "cross_vm_dma"):
        assert f"table_{k}" in d["metrics"]
    assert "map_stale_dma" not in d["metrics"]


def test_cli_runs_one_mode(capsys):
    assert main(["scenario", "run", "virtio-iommu", "--mode", "btm", "--policy", "private", "--vmid-bits",
                 "8"]) == 1
    assert "stale" in capsys.readouterr().out
    assert main(["scenario", "run", "virtio-iommu", "--mode", "dma"]) == 125
    assert "--mode 'dma': virtio-iommu takes map, table, btm, all" in capsys.readouterr().err


def test_bad_mode_raises():
    with pytest.raises(ValueError, match="mode"):
        run_scenario("virtio-iommu", "shared", 8, mode="nope")


def test_report_has_the_virtio_iommu_columns_sweep_and_plot(tmp_path, capsys):
    import xml.etree.ElementTree as ET
    assert main(["scenario", "report", "-o", str(tmp_path), "--scenarios", "virtio-iommu", "--policies", "private",
                 "--widths", "8", "--sweep", "1", "-j", "2"]) == 0
    capsys.readouterr()
    md = (tmp_path / "report.md").read_text()
    assert "| virtio-iommu | private | 8 | **no** |" in md
    assert "## virtio-iommu: cost per guest mapping change against the number of VMs (private policy)" in md
    assert "| 1 | 2.00 | 2.00 |" in md                        # MAP/UNMAP: 2 exits, 2 host calls per change
    root = ET.fromstring((tmp_path / "vm_exits.svg").read_text())
    assert "virtio-iommu MAP/UNMAP" in ET.tostring(root, encoding="unicode")
    data = json.loads((tmp_path / "results.json").read_text())
    assert [r["vms"] for r in data["viommu_sweep"]] == [1]
    assert all(r["metrics"]["table_vm_exits_per_change"] == 1.0 for r in data["viommu_sweep"])   # no BTM offer


def test_table_mode_without_the_extension_fails_cleanly():
    r = run_scenario("virtio-iommu", "shared", 8, mode="table", viommu_pgtable="off")
    m = r.metrics
    assert not r.ok and r.error is None and m["table_guest_exit"] == 5 and m["table_rounds"] == 0
    assert m["table_requests"] == {"PROBE:OK": 1}             # no ATTACH_TABLE: F_ATTACH_TABLE not offered
    assert "did not complete: table (guest exit 5, 0 of 6 rounds)" in r.verdict
