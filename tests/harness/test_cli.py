"""`smmu-harness run` end to end (subprocess): console, exit statuses, bad input, -d/-D, --ktap."""
import struct
from pathlib import Path

import pytest

from guestbin import assert_no_traceback, guest_elf, run_cli, run_cli_closed_stdout


def test_hello_prints_console_and_exits_0():
    p = run_cli("run", guest_elf("hello"))
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("Hello from an smmu-harness guest on cpu 0 at EL1\nPASS: hello: arithmetic\n")
    assert p.stdout.endswith("SUMMARY: 5 tests, 0 unexpected failures, 0 skipped\n")
    assert p.stderr == ""


def test_failing_report_exits_1_and_status_7_exits_7():
    p = run_cli("run", guest_elf("report_fail"))
    assert p.returncode == 1 and "FAIL: sample: this fails on purpose" in p.stdout
    p = run_cli("run", guest_elf("exit7"))
    assert p.returncode == 7 and p.stdout == "exit7: leaving with status 7\n"


def test_smp_output_identical_over_runs():
    outs = [run_cli("run", guest_elf("smp"), "--cpus", "2") for _ in range(3)]
    assert {p.returncode for p in outs} == {0}
    assert len({p.stdout for p in outs}) == 1 and "PASS: smp: cpu1: OFF after CPU_OFF" in outs[0].stdout


def _elf_variant(tmp_path, name, patch):
    data = bytearray(guest_elf("hello").read_bytes())
    patch(data)
    path = tmp_path / name
    path.write_bytes(bytes(data))
    return path


def _first_load_paddr(data, value):
    phoff = struct.unpack_from("<Q", data, 32)[0]
    for i in range(struct.unpack_from("<H", data, 56)[0]):
        off = phoff + i * 56
        if struct.unpack_from("<I", data, off)[0] == 1:          # PT_LOAD
            struct.pack_into("<Q", data, off + 24, value)          # p_paddr (load address)
            return


@pytest.mark.parametrize("kind,make,message", [
    ("missing", lambda t: t / "missing.elf", "no such file"),
    ("empty", lambda t: (t / "x.bin").write_bytes(b"") or t / "x.bin", "empty image"),
    ("uImage", lambda t: (t / "u.img").write_bytes(b"\x27\x05\x19\x56" + bytes(60)) and t / "u.img",
     "U-Boot uImage"),
    ("truncated", lambda t: _elf_variant(t, "cut.elf", lambda d: d.__delitem__(slice(0x200, None))), "truncated"),
    ("big-endian", lambda t: _elf_variant(t, "be.elf", lambda d: d.__setitem__(5, 2)), "big-endian"),
    ("32-bit", lambda t: _elf_variant(t, "e32.elf", lambda d: d.__setitem__(4, 1)), "32-bit ELF"),
    ("x86", lambda t: _elf_variant(t, "x86.elf", lambda d: struct.pack_into("<H", d, 18, 62)), "x86-64 ELF"),
    ("outside RAM", lambda t: _elf_variant(t, "far.elf", lambda d: _first_load_paddr(d, 0x1000)),
     "segment elf[0] [0x1000, 0x"),
])
def test_bad_input_exits_125_with_one_line(tmp_path, kind, make, message):
    p = run_cli("run", make(tmp_path))
    assert p.returncode == 125, (kind, p.stderr)
    assert message in p.stderr and p.stderr.count("\n") == 1 and p.stdout == ""
    assert_no_traceback(p)


@pytest.mark.parametrize("guest,args,status,needles", [
    ("spin", ["--timeout", "0.5"], 124, ["time budget of 0.5 s exhausted", "<main+"]),
    ("spin", ["--max-insns", "100000"], 124, ["instruction budget of 100000 exhausted"]),
    ("undef", [], 132, ["undefined instruction at pc 0x", "<do_undef+0x4>", "udf #0", "EC 0x00", "ESR 0x02000000"]),
    ("jump_unmapped", [], 139, ["instruction fetch from unmapped address at pc 0xe000000", "EC 0x21",
                                "FAR 0xe000000"]),
    ("mmio_hole", [], 139, ["data abort at pc 0x", "<poke_hole+", "str w", "EC 0x25", "ESR 0x96000050",
                            "FAR 0x8012000"]),
])
def test_guest_failures_give_status_and_one_death_line(guest, args, status, needles):
    p = run_cli("run", guest_elf(guest), *args)
    assert p.returncode == status, p.stderr
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("smmu-harness: ")
    for n in needles:
        assert n in lines[0], lines[0]
    assert_no_traceback(p)


@pytest.mark.parametrize("args,message", [
    ([], "a command is required"),
    (["run"], "give the guest image once: IMAGE or -kernel FILE"),
    (["run", "x.elf", "-kernel", "y.elf"], "give the guest image once: IMAGE or -kernel FILE"),
    (["run", "x.elf", "--cpus", "0"], "--cpus/-smp: 0 must be positive"),
    (["run", "x.elf", "-smp", "cpus=2,sockets=2"], "only N or cpus=N"),
    (["run", "x.elf", "-m", "1.5"], "-m: 1.5: guest RAM must be a positive whole number of MiB"),
    (["run", "x.elf", "-m", "lots"], "is not a size"),
    (["run", "x.elf", "--semihosting-allow-system"], "--semihosting-allow-system needs --semihosting-root"),
    (["run", "x.elf", "--timeout", "soon"], "is not a number"),
    (["run", "x.elf", "-d", "bogus"], "unknown log category bogus"),
    (["run", "x.elf", "--el", "3"], "invalid choice"),
    (["run", "x.elf", "--frobnicate"], "unrecognized arguments"),
])
def test_usage_errors_exit_125(args, message):
    p = run_cli(*args)
    assert p.returncode == 125 and message in p.stderr and p.stderr.count("\n") == 1, p.stderr
    assert_no_traceback(p)


def test_too_many_cpus_is_bad_input():
    p = run_cli("run", guest_elf("hello"), "--cpus", "1000")
    assert p.returncode == 125 and "1000 vCPUs" in p.stderr
    assert_no_traceback(p)


def test_too_much_ram_is_bad_input():
    p = run_cli("run", guest_elf("hello"), "--ram-mib", "100000")
    assert p.returncode == 125 and "100000 MiB of guest RAM" in p.stderr and p.stderr.count("\n") == 1
    assert_no_traceback(p)


def test_unknown_trace_event_is_a_usage_error():
    p = run_cli("run", guest_elf("hello"), "--trace-events", "no_such_event")
    assert p.returncode == 125 and p.stderr == "smmu-harness run: unknown trace event 'no_such_event'\n"


def test_debug_log_categories_to_file(tmp_path):
    log = tmp_path / "log.txt"
    p = run_cli("run", guest_elf("smp"), "--cpus", "2", "-d", "in_asm,int,guest_errors,unimp", "-D", log)
    assert p.returncode == 0 and p.stderr == ""
    text = log.read_text()
    assert "IN: _start" in text and "mrs x" in text                          # in_asm, capstone
    assert "vm0.cpu0: hvc at pc" in text and "PSCI CPU_ON64(0x1, " in text   # int
    assert "semihosting SYS_EXIT" in text


def test_guest_errors_logged_for_uart_hole(tmp_path):
    # A write inside the PL011 window but to no register is RAZ/WI and logged (QEMU does the same).
    src = tmp_path / "uart_hole.c"
    src.write_text('#include "guest.h"\nint main(void) { writel(1, PL011_BASE + 0x800); return 0; }\n')
    p = run_cli("build", src)
    assert p.returncode == 0, p.stderr
    elf = p.stdout.strip()
    p = run_cli("run", elf, "-d", "guest_errors")
    assert p.returncode == 0 and "pl011: bad write size 4 at offset 0x800" in p.stderr
    assert run_cli("run", elf).stderr == ""


def test_ktap_on_stdout_console_on_stderr():
    p = run_cli("run", guest_elf("report_fail"), "--ktap")
    assert p.returncode == 1
    assert p.stdout.splitlines() == [
        "KTAP version 1", "1..3",
        "ok 1 sample: this passes",
        "not ok 2 sample: this fails on purpose",
        "ok 3 sample: nothing to see here # SKIP",
    ]
    assert "SUMMARY: 3 tests, 1 unexpected failures, 1 skipped" in p.stderr


def test_ktap_reports_a_death_as_not_ok():
    p = run_cli("run", guest_elf("undef"), "--ktap")
    assert p.returncode == 132
    lines = p.stdout.splitlines()
    assert lines[:2] == ["KTAP version 1", "1..1"] and lines[2].startswith("not ok 1 undef-")
    assert "exit status 132" in lines[2]


def test_start_el2_and_hcr_fb_are_stored(tmp_path):
    p = run_cli("run", guest_elf("hello"), "--el", "2", "--hcr-fb", "0")
    assert p.returncode == 0 and "at EL2" in p.stdout


def test_python_m_harness_help():
    p = run_cli("run", "--help")
    assert p.returncode == 0 and "--max-insns" in p.stdout and "--ktap" in p.stdout


def test_trace_events_lists_every_event_with_fields():
    from devmodel.trace import REGISTRY
    from harness.trace.catalog import load_all
    load_all()
    p = run_cli("trace-events")
    assert p.returncode == 0
    names = [line.split("(", 1)[0] for line in p.stdout.splitlines()]
    assert names == sorted(set(names)) and set(names) <= set(REGISTRY)     # (tests define extra events here)
    for module_event in ("tlbi_trap", "dvm_sync", "smmuv3_cmdq_opcode", "smmu_iotlb_lookup_hit",
                         "kvm_vmid_rollover", "hostsmmu_cmd", "vsmmu_cmd"):
        assert module_event in names
    assert "tlbi_trap(cpu, pc, el, op, xt," in p.stdout
    p = run_cli("trace-events", "kvm_vmid_*")
    assert p.returncode == 0 and {line.split("(")[0] for line in p.stdout.splitlines()} == \
        {n for n in REGISTRY if n.startswith("kvm_vmid_")}
    p = run_cli("trace-events", "nope")
    assert p.returncode == 125 and "unknown trace event 'nope'" in p.stderr


# -- errors are one line and a status; a closed pipe is quiet ----------------------------------------------
@pytest.mark.parametrize("args,status", [
    (["trace-events"], 0),                                       # the command's own status stands
    (["scenario", "list"], 0),
    (["build", "guest_fw/tests/hello.c"], 0),
    (["run", "@report_fail"], 1),                                # the guest's own status
    (["run", "@report_fail", "--ktap"], 1),
    (["run", "@hello"], 0),
    (["scenario", "run", "over-invalidation", "--policy", "private", "--vms", "1"], 1),
])
def test_closed_stdout_exits_quietly(args, status):
    p = run_cli_closed_stdout(*[str(guest_elf(a[1:])) if a.startswith("@") else a for a in args])
    assert p.returncode == status
    assert "Traceback" not in p.stderr and "internal error" not in p.stderr and "Broken pipe" not in p.stderr
    if "--ktap" not in args:
        assert p.stderr == ""


@pytest.mark.parametrize("case", ["ELF is a directory", "-D directory", "-D missing directory",
                                  "--trace missing directory", "--expect-trace directory",
                                  "--update-golden into a missing directory"])
def test_oserror_on_a_user_path_is_one_line_125(tmp_path, capsys, case):
    from harness.cli import main
    hello = guest_elf("hello")
    missing = tmp_path / "no" / "such"
    args = {"ELF is a directory": [tmp_path],
            "-D directory": [hello, "-d", "int", "-D", tmp_path],
            "-D missing directory": [hello, "-d", "int", "-D", missing / "log"],
            "--trace missing directory": [hello, "--trace", missing / "t.log"],
            "--expect-trace directory": [hello, "--expect-trace", tmp_path],
            "--update-golden into a missing directory": [hello, "--expect-trace", missing / "g.jsonl",
                                                         "--update-golden"]}[case]
    assert main(["run", *map(str, args)]) == 125, case
    cap = capsys.readouterr()
    assert cap.err.count("\n") == 1 and cap.out == "", cap.err
    named = str(args[-2] if case == "--update-golden into a missing directory" else args[-1])
    assert named in cap.err or str(Path(named).parent) in cap.err, cap.err
    assert "Errno" not in cap.err and "internal error" not in cap.err and "Traceback" not in cap.err


# -- --cpus and the runtime's per-CPU stacks -------------------------------------------------------------
def test_cpus_above_the_images_stacks_is_refused(capsys):
    """The default image has 16 per-CPU stacks (GUEST_NR_CPUS); more --cpus is refused before it runs (it used to
    park CPU 16 in cpu_setup and hang the guest), saying how to build for more."""
    from harness.cli import main
    assert main(["run", str(guest_elf("smp")), "--cpus", "17"]) == 125
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "built with stacks for 16 CPUs" in err and "build --max-cpus 17" in err


def test_build_max_cpus_boots_that_many(tmp_path, capsys):
    from harness.build import TESTS_DIR
    from harness.cli import main
    from harness.elfload import load_elf
    elf = tmp_path / "smp20.elf"
    assert main(["build", str(TESTS_DIR / "smp.c"), "-o", str(elf), "--max-cpus", "20"]) == 0
    assert load_elf(elf).constants["GUEST_NR_CPUS"] == 20
    capsys.readouterr()
    assert main(["run", str(elf), "--cpus", "20", "--timeout", "60"]) == 0
    out = capsys.readouterr().out
    assert "PASS: smp: cpu19: OFF after CPU_OFF" in out and "INFO: smp: 20 CPUs present" in out
    assert main(["build", str(TESTS_DIR / "smp.c"), "--max-cpus", "257"]) == 125
    assert "--max-cpus 257: 1 to 256" in capsys.readouterr().err


def test_runtime_cpu_defaults_agree():
    import re
    from harness.build import DEFAULT_CPUS, LINKER_SCRIPT, RUNTIME_DIR
    from harness.elfload import load_elf
    assert f"DEFINED(GUEST_NR_CPUS) ? GUEST_NR_CPUS : {DEFAULT_CPUS};" in LINKER_SCRIPT.read_text()
    assert re.search(rf"#define NR_CPUS {DEFAULT_CPUS}\b", (RUNTIME_DIR / "guest.h").read_text())
    assert load_elf(guest_elf("hello")).constants["GUEST_NR_CPUS"] == DEFAULT_CPUS


@pytest.mark.parametrize("guest,cpus,skip", [("smp_remap_local", 1, "needs 2 CPUs"), ("tlbi_smp4", 2, "needs 4 CPUs")])
def test_smp_samples_skip_quickly_without_enough_cpus(capsys, guest, cpus, skip):
    """The samples check smp_boot_secondary: too few vCPUs is a SKIP line, not a 300 s hang."""
    from harness.cli import main
    assert main(["run", str(guest_elf(guest)), "--cpus", str(cpus), "--timeout", "20"]) == 0
    out = capsys.readouterr().out
    assert "SKIP: " in out and skip in out and "1 skipped" in out


# -- guest values printed as the guest sees them ---------------------------------------------------------
def test_int_log_prints_psci_results_as_the_guest_reads_them(tmp_path, capsys):
    from harness.cli import main
    log = tmp_path / "int.log"
    assert main(["run", str(guest_elf("smp")), "--cpus", "2", "-d", "int", "-D", str(log)]) == 0
    text = log.read_text()
    assert "None" not in text and "True" not in text and "False" not in text
    assert "PSCI AFFINITY_INFO64(0x1, 0x0, 0x0) -> 0x1" in text                # OFF
    assert "PSCI CPU_OFF(0x0, 0x0, 0x0) -> no return" in text
    assert "-> -4 ALREADY_ON" in text and "-> -2 INVALID_PARAMETERS" in text


def test_unittests_cfg_names_only_options_that_exist():
    """The catalogue's comments advertise only options its pytest plugin really adds."""
    import re

    from harness import pytest_plugin
    from harness.build import TESTS_DIR

    added: set[str] = set()

    class Recorder:
        def getgroup(self, *a, **kw):
            return self

        def addoption(self, *names, **kw):
            added.update(names)

    pytest_plugin.pytest_addoption(Recorder())
    comments = [line for line in (TESTS_DIR / "unittests.cfg").read_text().splitlines() if line.startswith("#")]
    options = set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", "\n".join(comments)))
    assert "--update-golden" in options and options <= added, options - added


def _commands(parser) -> list[str]:
    import argparse

    return [name for a in parser._actions if isinstance(a, argparse._SubParsersAction) for name in a.choices]


def test_a_command_line_builds_only_its_commands_parser_and_help_gets_all():
    from harness.cli import COMMANDS, build_parser, command_of

    assert _commands(build_parser(command_of(["run", "hello.elf", "--cpus", "2"]))) == ["run"]
    assert _commands(build_parser(command_of(["dtb", "-o", "x.dtb"]))) == ["dtb"]
    for argv in (["--help"], ["-h", "run"], ["frobnicate"], []):      # help, or an error listing the commands
        assert command_of(argv) is None, argv
    assert _commands(build_parser(None)) == list(COMMANDS)
    r = run_cli("-h", "run")
    assert r.returncode == 0 and all(c in r.stdout for c in COMMANDS)
