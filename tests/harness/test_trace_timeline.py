"""Chrome/Perfetto traces carry virtual time: `ts` is the machine's clock (one tick per instruction at 62.5 MHz)
in microseconds, monotonic per track and proportional to the instructions between two events; DVM Sync acks
are flows; addresses are hex strings. Checked on the JSON the CLI writes, for `run` and `scenario run`."""
from __future__ import annotations

import json
from collections import defaultdict

import pytest

from guestbin import guest_elf, run_cli
from harness.clock import HZ

TICK_US = 1e6 / HZ


def load(path):
    evs = json.loads(path.read_text())
    names = {(e["pid"], e["tid"]): e["args"]["name"] for e in evs if e["ph"] == "M" and e["name"] == "thread_name"}
    return evs, names


def assert_monotonic_per_track(evs):
    last = defaultdict(float)
    for e in evs:
        if e["ph"] != "X":
            continue
        key = (e["pid"], e["tid"])
        assert e["ts"] >= last[key] - 1e-6, e                # no slice starts before the previous one ends
        last[key] = e["ts"] + e["dur"]


@pytest.mark.parametrize("quantum", [10_000, 1000])
def test_ts_is_virtual_time_proportional_to_the_instructions_between_two_tlbis(tmp_path, quantum):
    iterations = 500_000                                     # timeline.S: 2 instructions per iteration
    out = tmp_path / "t.json"
    p = run_cli("run", guest_elf("timeline"), "--trace", out, "--quantum", str(quantum))
    assert p.returncode == 0, p.stderr
    evs, names = load(out)
    assert_monotonic_per_track(evs)
    traps = [e for e in evs if e["ph"] == "X" and e["name"] == "tlbi_trap"]
    assert len(traps) == 2 and {names[(e["pid"], e["tid"])] for e in traps} == {"vm0.cpu0"}
    between = 1 + 2 * iterations                             # DSB ISH, then the loop
    ticks = (traps[1]["ts"] - traps[0]["ts"]) / TICK_US
    assert abs(ticks - between) <= quantum                   # the clock's resolution is one slice
    assert traps[0]["args"]["pc"].startswith("0x40080") and isinstance(traps[0]["args"]["pc"], str)
    assert traps[0]["dur"] == pytest.approx(TICK_US)


def test_dvm_sync_acks_are_flows_from_the_sync_to_each_receiver(tmp_path):
    out = tmp_path / "t.json"
    p = run_cli("run", guest_elf("tlbi_dsb_sync"), "--cpus", "2", "--trace", out)
    assert p.returncode == 0, p.stderr
    evs, names = load(out)
    assert_monotonic_per_track(evs)
    syncs = [e for e in evs if e["ph"] == "X" and e["name"] == "dvm_sync" and e["args"]["acked"]]
    assert syncs
    by_id = defaultdict(dict)
    for e in evs:
        if e["ph"] in "sf" and e["cat"] == "dvm_sync":
            by_id[e["id"]][e["ph"]] = e
    assert by_id and all(set(f) == {"s", "f"} for f in by_id.values())
    slices = {(e["pid"], e["tid"], e["ts"]): e for e in evs if e["ph"] == "X"}
    for flow in by_id.values():
        src = slices[(flow["s"]["pid"], flow["s"]["tid"], flow["s"]["ts"])]
        dst = slices[(flow["f"]["pid"], flow["f"]["tid"], flow["f"]["ts"])]
        assert src["name"] == "dvm_sync" and dst["name"] == "dvm_sync_ack"
        assert names[(dst["pid"], dst["tid"])] in src["args"]["acked"].split(",")
        assert dst["args"]["msg"] == src["args"]["msg"]
    assert len(by_id) == sum(len(e["args"]["acked"].split(",")) for e in syncs)


def test_scenario_traces_have_virtual_time_too(tmp_path):
    out = tmp_path / "s.json"
    p = run_cli("scenario", "run", "sva-btm", "--trace", out)
    assert p.returncode == 0, p.stderr
    evs, names = load(out)
    assert_monotonic_per_track(evs)
    loads = [e["ts"] for e in evs if e["ph"] == "X" and e["name"] == "kvm_vcpu_load"]
    slice_us = 20_000 * TICK_US                              # the scenario platform's quantum
    starts = sorted({round(t / slice_us) for t in loads})
    assert len(starts) > 10 and all(abs(t - round(t / slice_us) * slice_us) < 1 for t in loads)
    assert max(loads) >= (len(starts) - 1) * slice_us        # a slice per vCPU load: time is not the sequence
