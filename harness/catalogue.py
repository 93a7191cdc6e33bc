"""`unittests.cfg` catalogues: kvm-unit-tests' format, read as its scripts read it, plus this project's keys.

One parser serves kvm-unit-tests' own `arm/unittests.cfg` (run by `smmu-harness unittests`, harness/unittests.py)
and this project's `guest_fw/tests/unittests.cfg` (also collected by pytest, harness/pytest_plugin.py).

The format (kvm-unit-tests docs/unittests.txt, scripts/common.bash `for_each_unittest`): a `[name]` line starts
a test; `key = value` lines set its parameters; lines starting with `#` are comments (this parser also drops a
` # comment` after a value, as the docs say "all following contents of the line is ignored"); a
`qemu_params = \"\"\"` value runs to the closing triple quote. kvm-unit-tests' keys: `file` (image next to the
catalogue), `smp` (`$MAX_SMP` and `$((...))` arithmetic as bash expands them), `test_args` (`-append`, split
like a shell), `qemu_params` (alias `extra_params`; split like a shell), `kvmtool_params` (ignored), `groups`,
`arch`, `machine`, `accel`, `timeout` (seconds, an `s` suffix allowed; default 90 for images as in
scripts/runtime.bash, 30 for this project's sources), `check`, `disabled_if`. This project's keys: `cpus` (=
smp), `expect_trace`, `el`, `hcr_fb`, `vmid`, `exit`, `trace_events`, `max_insns`, `qemu` (what the same guest
gives under qemu-system-aarch64 when that differs from this harness, with the reason: `QemuVerdict`, checked by
tests/harness/test_qemu.py). An unknown key is an error: a typo must not silently change what a test checks.

A test whose `file` is a C or assembly source is one of this project's guests: it is built (harness/build.py)
and its status is compared with `exit`; anything else (kvm-unit-tests' `.flat`, an ELF) is an image booted as
QEMU's `-kernel` boots it, whose status is read as arm/run reads QEMU's (harness/exits.py).
"""
from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CatalogueError", "TestEntry", "QemuVerdict", "parse_catalogue", "parse_qemu_verdict", "max_smp",
           "expand_smp", "disabled", "SOURCE_SUFFIXES", "KUT_KEYS", "PROJECT_KEYS"]

KUT_KEYS = {"file", "smp", "test_args", "qemu_params", "extra_params", "kvmtool_params", "groups", "arch",
            "machine", "accel", "timeout", "check", "disabled_if"}
PROJECT_KEYS = {"cpus", "expect_trace", "el", "hcr_fb", "vmid", "exit", "trace_events", "max_insns", "qemu"}
SOURCE_SUFFIXES = (".c", ".S", ".s")
DEFAULT_TIMEOUT = {True: 30.0, False: 90.0}          # by "is a source": ours, kvm-unit-tests' (runtime.bash)

_SECTION = re.compile(r"^\[(.*)\]$")
_KEY = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$")


class CatalogueError(Exception):
    """A unittests.cfg section that cannot be run as written (one line, naming file and section)."""


@dataclass(frozen=True)
class QemuVerdict:
    """`qemu = KIND: REASON`, what qemu-system-aarch64 -M virt -cpu max -semihosting gives for a guest where it is
    not what this harness gives (default, no key: the same status and console output):

    * `status N`: QEMU exits with N (124: still running at the timeout, as `timeout(1)` reports it); what it
      printed before it stopped is what the harness printed (its last line may be the runtime's
      "unhandled exception" line);
    * `as NAME`: QEMU gives what the harness gives for the catalogue's test NAME (status and output);
    * `output`: the same status; some console lines differ, as a check in tests/harness/test_qemu.py says."""
    kind: str                                     # "status", "as" or "output"
    reason: str
    status: int | None = None                     # kind "status"
    entry: str | None = None                      # kind "as"


def parse_qemu_verdict(text: str) -> QemuVerdict:
    """A `qemu =` value (ValueError saying what is wrong)."""
    head, sep, reason = text.partition(":")
    words, reason = head.split(), reason.strip()
    if not sep or not reason:
        raise ValueError("expected 'status N: REASON', 'as NAME: REASON' or 'output: REASON'")
    if len(words) == 2 and words[0] == "status" and words[1].isdigit() and int(words[1]) <= 255:
        return QemuVerdict("status", reason, status=int(words[1]))
    if len(words) == 2 and words[0] == "as":
        return QemuVerdict("as", reason, entry=words[1])
    if words == ["output"]:
        return QemuVerdict("output", reason)
    raise ValueError(f"{head.strip()!r} is not 'status N', 'as NAME' or 'output'")


@dataclass(frozen=True)
class TestEntry:
    """One `[name]` section. `cpus` is `smp` expanded with the catalogue's MAX_SMP."""
    name: str
    source: Path
    cpus: int = 1
    groups: tuple[str, ...] = ()
    timeout: float = 30.0
    expect_trace: Path | None = None
    el: int = 1
    hcr_fb: bool = True
    vmid: int | None = None
    exit: int = 0
    trace_events: str | None = None
    max_insns: int | None = None
    qemu: QemuVerdict | None = None               # QEMU's verdict where it differs from the harness's
    test_args: str | None = None                  # -append (the kernel command line), None: no -append
    qemu_params: tuple[str, ...] = ()
    arch: str | None = None
    machine: str | None = None
    accel: str | None = None
    check: str | None = None
    disabled_if: str | None = None

    __test__ = False                              # not a pytest test class despite the name

    @property
    def is_source(self) -> bool:
        """One of this project's guests (built, `exit` compared) rather than an image (arm/run semantics)."""
        return self.source.suffix in SOURCE_SUFFIXES


def max_smp() -> int:
    """MAX_SMP as run_tests.sh sets it: the environment's, else the online CPUs (`getconf _NPROCESSORS_ONLN`)."""
    env = os.environ.get("MAX_SMP")
    if env and env.strip().isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, os.sysconf("SC_NPROCESSORS_ONLN"))
    except (ValueError, OSError):
        return os.cpu_count() or 1


# -- bash's arithmetic, the part unittests.cfg uses ----------------------------------------------------------
_TOKEN = re.compile(r"\s*(\d+|&&|\|\||<=|>=|==|!=|[-+*/%<>()?:!])")


def _arith(text: str) -> int:
    """Evaluate a bash `$((...))` body of integers: ?: || && == != < <= > >= + - * / % ! and parentheses."""
    toks, pos = [], 0
    while pos < len(text.rstrip()):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ValueError(f"cannot evaluate {text!r}")
        toks.append(m.group(1))
        pos = m.end()
    toks.append("")
    i = 0

    def peek() -> str:
        return toks[i]

    def take(expect: str | None = None) -> str:
        nonlocal i
        t = toks[i]
        if expect is not None and t != expect:
            raise ValueError(f"cannot evaluate {text!r}: expected {expect!r}")
        i += 1
        return t

    binary = [("||",), ("&&",), ("==", "!="), ("<", "<=", ">", ">="), ("+", "-"), ("*", "/", "%")]

    def cond() -> int:
        c = level(0)
        if peek() == "?":
            take()
            a = cond()
            take(":")
            b = cond()
            return a if c else b
        return c

    def level(n: int) -> int:
        if n == len(binary):
            return unary()
        v = level(n + 1)
        while peek() in binary[n]:
            v = _apply(take(), v, level(n + 1))
        return v

    def unary() -> int:
        t = take()
        if t == "-":
            return -unary()
        if t == "!":
            return int(not unary())
        if t == "(":
            v = cond()
            take(")")
            return v
        if t.isdigit():
            return int(t)
        raise ValueError(f"cannot evaluate {text!r}")

    v = cond()
    if peek() != "":
        raise ValueError(f"cannot evaluate {text!r}")
    return v


def _apply(op: str, a: int, b: int) -> int:
    if op in ("/", "%") and b == 0:
        raise ValueError("division by 0")
    return {"||": lambda: int(bool(a or b)), "&&": lambda: int(bool(a and b)), "==": lambda: int(a == b),
            "!=": lambda: int(a != b), "<": lambda: int(a < b), "<=": lambda: int(a <= b),
            ">": lambda: int(a > b), ">=": lambda: int(a >= b), "+": lambda: a + b, "-": lambda: a - b,
            "*": lambda: a * b, "/": lambda: int(a / b), "%": lambda: a - int(a / b) * b}[op]()


def expand_smp(value: str, maxsmp: int) -> int:
    """`smp = ` as bash expands it: `$MAX_SMP` / `${MAX_SMP}`, `$((...))` arithmetic, plain numbers."""
    text = re.sub(r"\$\{?MAX_SMP\}?", str(maxsmp), value.strip())
    m = re.fullmatch(r"\$\(\((.*)\)\)", text)
    return _arith(m.group(1)) if m else _arith(text)


# -- disabled_if ---------------------------------------------------------------------------------------------
_TEST = re.compile(r"\[\[\s*(\S+)\s*(==|=|!=)\s*(\S+)\s*\]\]")


def disabled(condition: str, env: dict[str, str]) -> bool:
    """A `disabled_if` condition of `[[ "$VAR" == value ]]` tests joined by && and || (bash: equal precedence,
    left to right), with `env` giving the variables (TARGET, CONFIG_EFI, ARCH, ACCEL...). ValueError for
    anything else: the caller skips such a test, saying why."""
    def word(w: str) -> str:
        w = w.strip("\"'")
        return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: env.get(m.group(1), ""), w)

    parts = re.split(r"\s*(&&|\|\|)\s*", condition.strip())
    result: bool | None = None
    op = None
    for k, part in enumerate(parts):
        if k % 2:
            op = part
            continue
        m = _TEST.fullmatch(part)
        if m is None:
            raise ValueError(f"disabled_if {condition!r}: only [[ a == b ]] / [[ a != b ]] tests are understood")
        a, rel, b = word(m.group(1)), m.group(2), word(m.group(3))
        v = (a == b) if rel in ("=", "==") else (a != b)
        result = v if result is None else (result and v if op == "&&" else result or v)
    return bool(result)


# -- parsing ------------------------------------------------------------------------------------------------
def _sections(path: Path) -> list[tuple[str, int, dict[str, str]]]:
    """(name, line number, {key: value}) per section, keys as written (the last of a repeated key wins)."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise CatalogueError(f"{path}: {getattr(e, 'strerror', None) or e}") from None
    out: list[tuple[str, int, dict[str, str]]] = []
    it = iter(enumerate(lines, 1))
    for no, raw in it:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _SECTION.match(line)
        if m:
            out.append((m.group(1), no, {}))
            continue
        m = _KEY.match(line)
        if m is None:
            raise CatalogueError(f"{path}:{no}: not a [name] or key = value line: {line!r}")
        if not out:
            raise CatalogueError(f"{path}:{no}: {m.group(1)} = before the first [name]")
        key, value = m.group(1), m.group(2)
        if value.startswith('"""'):
            value = _multiline(path, no, value[3:], it)
        else:
            value = re.sub(r"\s+#.*$", "", value).strip()
        out[-1][2][key] = value
    return out


def _multiline(path: Path, no: int, first: str, it) -> str:
    """A triple-quoted value: the lines up to the closing quotes (a trailing backslash joins lines, as the
    bash does)."""
    text = first
    while '"""' not in text:
        try:
            _, more = next(it)
        except StopIteration:
            raise CatalogueError(f"{path}:{no}: unterminated \"\"\" value") from None
        text = (text[:-1] if text.endswith("\\") else text + "\n") + more
    return text[:text.index('"""')].strip()


def _int(sec: dict[str, str], key: str, default: int | None, where: str) -> int | None:
    if key not in sec:
        return default
    try:
        return int(sec[key], 0)
    except ValueError:
        raise CatalogueError(f"{where}: {key} = {sec[key]!r} is not an integer") from None


def _shell_words(sec: dict[str, str], key: str, where: str) -> list[str]:
    try:
        return shlex.split(sec.get(key, ""))
    except ValueError as e:
        raise CatalogueError(f"{where}: {key}: {e}") from None


def _entry(path: Path, name: str, sec: dict[str, str], maxsmp: int) -> TestEntry:
    where = f"{path}:[{name}]"
    unknown = set(sec) - KUT_KEYS - PROJECT_KEYS
    if unknown:
        raise CatalogueError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    if not sec.get("file"):
        raise CatalogueError(f"{where}: no file =")
    src = path.parent / sec["file"]
    el = _int(sec, "el", 1, where)
    if el not in (1, 2):
        raise CatalogueError(f"{where}: el = {el} (1 or 2)")
    fb = _int(sec, "hcr_fb", 1, where)
    if fb not in (0, 1):
        raise CatalogueError(f"{where}: hcr_fb = {fb} (0 or 1)")
    cpus = _int(sec, "cpus", None, where)
    if cpus is None and "smp" in sec:
        try:
            cpus = expand_smp(sec["smp"], maxsmp)
        except ValueError as e:
            raise CatalogueError(f"{where}: smp = {sec['smp']!r} is not an integer ({e})") from None
    if cpus is not None and cpus < 1:
        raise CatalogueError(f"{where}: {cpus} CPUs")
    source = src.suffix in SOURCE_SUFFIXES
    try:
        timeout = float(sec["timeout"].rstrip("s")) if "timeout" in sec else DEFAULT_TIMEOUT[source]
    except ValueError:
        raise CatalogueError(f"{where}: timeout = {sec['timeout']!r}") from None
    args = _shell_words(sec, "test_args", where) if "test_args" in sec else None
    params = sec.get("qemu_params", sec.get("extra_params"))
    try:
        qemu = parse_qemu_verdict(sec["qemu"]) if "qemu" in sec else None
    except ValueError as e:
        raise CatalogueError(f"{where}: qemu = {sec['qemu']!r}: {e}") from None
    return TestEntry(
        name=name, source=src, cpus=cpus or 1, groups=tuple(sec.get("groups", "").split()), timeout=timeout,
        expect_trace=path.parent / sec["expect_trace"] if "expect_trace" in sec else None,
        el=el, hcr_fb=bool(fb), vmid=_int(sec, "vmid", None, where), exit=_int(sec, "exit", 0, where),
        trace_events=sec.get("trace_events"), max_insns=_int(sec, "max_insns", None, where), qemu=qemu,
        test_args=" ".join(args) if args is not None else None,
        qemu_params=tuple(_shell_words({"qemu_params": params or ""}, "qemu_params", where)),
        arch=sec.get("arch") or None, machine=sec.get("machine") or None, accel=sec.get("accel") or None,
        check=sec.get("check") or None, disabled_if=sec.get("disabled_if") or None)


def parse_catalogue(path: str | os.PathLike, maxsmp: int | None = None) -> list[TestEntry]:
    """Every test of the catalogue at `path`, in file order; `maxsmp` for `$MAX_SMP` (default `max_smp()`)."""
    path = Path(path)
    smp = max_smp() if maxsmp is None else maxsmp
    entries = [_entry(path, name, sec, smp) for name, _, sec in _sections(path)]
    seen: set[str] = set()
    for e in entries:
        if e.name in seen:
            raise CatalogueError(f"{path}: [{e.name}] appears twice")
        seen.add(e.name)
    for e in entries:
        if e.qemu is not None and e.qemu.kind == "as" and e.qemu.entry not in seen - {e.name}:
            raise CatalogueError(f"{path}:[{e.name}]: qemu = as {e.qemu.entry}: no other test of that name")
    return entries
