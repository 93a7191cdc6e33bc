"""Guest builds: one entry point for every guest binary, with a content-addressed cache.

Toolchain (first match wins):
* `CC` (and optionally `LD`) from the environment, e.g. `CC="clang --target=aarch64-none-elf"`;
* `CROSS_COMPILE` prefix, e.g. `CROSS_COMPILE=aarch64-linux-gnu-` (uses `${CROSS_COMPILE}gcc` and `ld`);
* default: the `ziglang` package from PyPI (pinned in setup.cfg), `python3 -m ziglang cc -target
  aarch64-freestanding -mcpu=generic+v8_4a+xs` and `python3 -m ziglang ld.lld`.

Every object is cached under a key that hashes the toolchain's identity (command and `--version` output), the
flags, the source and every header it could include; the link is cached under the keys of its objects, the
linker script and the flags. Unchanged guests are therefore never rebuilt, in this process or the next one.
Cache directory: `$SMMU_HARNESS_CACHE`, else `.guest-cache/` at the root of a writable source checkout, else
`$XDG_CACHE_HOME/smmu-harness` (`~/.cache/smmu-harness`). Writes go to a temporary name and are renamed, so
parallel builds (pytest-xdist) are safe. Unusable paths raise `BuildInputError` (one line naming the path);
a failed compile or link raises `BuildError` with the tool's output.

`build_guest(..., binary=True)` also writes the flat binary of the ELF (`flat_binary`: what `objcopy -O
binary` writes, the PT_LOAD file bytes from the lowest physical address): the raw image form that QEMU's
`-kernel` loads at RAM + 0x80000, where guest_fw/link.ld links every guest, so the same code runs as an ELF
or as a raw image (the runtime's start.S keeps x0-x3 of the boot in `boot_args[]`: x0 = the device tree).

A guest source may carry build options in a comment in its first lines: `smmu-harness-build: no-runtime`
(link only this file with link.ld: assembly guests that bring their own `_start`). With the runtime, a
`#include "X.h"` of a runtime library header also links `guest_fw/lib/X.c` (e.g. `vsmmu.h`, `pgtable.h`).
"""
from __future__ import annotations

import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

__all__ = ["Toolchain", "BuildError", "BuildInputError", "BuildResult", "toolchain_from_env", "build_guest",
           "build_test_guest", "flat_binary", "test_guest_sources", "cache_dir", "check_output_path", "shipped_path",
           "GUEST_FW", "RUNTIME_DIR", "LINKER_SCRIPT", "RUNTIME_SOURCES", "TESTS_DIR", "CFLAGS", "DEFAULT_CPUS",
           "MAX_CPUS"]

from . import locations as _locations  # noqa: E402
from .locations import GUEST_FW, shipped_path  # noqa: E402,F401  (defined there: start-up of `run`)

RUNTIME_DIR = GUEST_FW / "lib"
TESTS_DIR = GUEST_FW / "tests"
LINKER_SCRIPT = GUEST_FW / "link.ld"
RUNTIME_SOURCES = ("start.S", "libc.c", "smp.c", "exceptions.c", "report.c", "mmu.c")
_SOURCE_SUFFIXES = (".c", ".S", ".s")

# -fno-sanitize=all: zig's clang turns UBSan on (with calls into a runtime a freestanding guest does not have)
# when the optimisation level is -O0 (zig's Debug mode); the guests have no sanitizer runtime at any -O level.
# It changes no code at -O2 and GCC accepts it too. User --cflags come after these, so -O0/-O3 override -O2.
CFLAGS = ("-ffreestanding", "-fno-builtin", "-nostdlib", "-fno-stack-protector", "-fno-pic", "-fno-pie",
          "-mstrict-align", "-fno-asynchronous-unwind-tables", "-fno-unwind-tables", "-fno-sanitize=all",
          "-O2", "-g", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter")
LDFLAGS = ("-nostdlib", "-static", "--build-id=none", "-z", "max-page-size=4096")
DEFAULT_CPUS = 16        # per-CPU stacks in an image unless built with max_cpus (link.ld GUEST_NR_CPUS)
MAX_CPUS = 256           # the harness's vCPU limit per VM (MPIDR Aff1:Aff0 numbering of the runtime)


class BuildError(Exception):
    """A compile or link step failed; the message includes the tool's output."""


class BuildInputError(BuildError):
    """A path the caller gave cannot be used (missing or unreadable source, a directory where a file is
    expected, an output directory that does not exist); one line naming the path (CLI exit status 125)."""


@dataclass(frozen=True)
class Toolchain:
    name: str
    cc: tuple[str, ...]
    ld: tuple[str, ...]
    arch_flags: tuple[str, ...] = ()
    _ident: list = field(default_factory=list, compare=False, repr=False)

    def identity(self) -> str:
        """Command lines plus the compiler's and linker's `--version`: computed once per process for the same
        commands and PATH (`toolchain_from_env` makes a new Toolchain per build; asking `python3 -m ziglang`
        twice for its version costs ~0.1 s, more than running a catalogue guest)."""
        if not self._ident:
            key = (self.cc, self.ld, self.arch_flags, os.environ.get("PATH", ""))
            if key not in _IDENTITIES:
                _IDENTITIES[key] = self._ask_versions()
            self._ident.append(_IDENTITIES[key])
        return self._ident[0]

    def _ask_versions(self) -> str:
        import subprocess                    # here, not at import: `run` needs only shipped_path (start-up)

        parts = [" ".join(self.cc), " ".join(self.ld), " ".join(self.arch_flags)]
        procs = []
        try:                                 # both at once: each is an interpreter's and a zig's start-up
            for cmd in (self.cc, self.ld):
                procs.append((cmd, subprocess.Popen([*cmd, "--version"], stdin=subprocess.DEVNULL,
                                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
            for cmd, p in procs:
                out, err = p.communicate(timeout=60)
                parts.append(out.splitlines()[0] if out else err[:200])
        except (OSError, subprocess.SubprocessError) as e:
            for _, p in procs:
                p.kill()
                p.wait()
            raise BuildError(f"toolchain {self.name}: cannot run {cmd[0]}: {e}") from None
        return "\n".join(parts)


#: `Toolchain.identity` per (cc, ld, arch flags, PATH), for this process (and the workers it forks)
_IDENTITIES: dict[tuple, str] = {}


def toolchain_from_env(env: Mapping[str, str] | None = None) -> Toolchain:
    env = os.environ if env is None else env
    cc, ld, cross = env.get("CC", "").strip(), env.get("LD", "").strip(), env.get("CROSS_COMPILE", "").strip()
    if cc:
        cc_cmd = tuple(shlex.split(cc))
        base = os.path.basename(cc_cmd[0])
        if ld:
            ld_cmd = tuple(shlex.split(ld))
        elif cross:
            ld_cmd = (cross + "ld",)
        elif "ziglang" in cc_cmd:
            ld_cmd = (cc_cmd[0], "-m", "ziglang", "ld.lld") if base.startswith("python") else ("ld.lld",)
        else:
            ld_cmd = ("ld.lld",) if "clang" in base else ("ld",)
        arch: tuple[str, ...] = ()
        if "clang" in base and not any(a.startswith(("--target", "-target")) for a in cc_cmd):
            arch = ("--target=aarch64-none-elf",)
        if "gcc" in base or "clang" in base:
            arch += ("-march=armv8.4-a",)
        return Toolchain(f"CC={cc}", cc_cmd, ld_cmd, arch)
    if cross:
        return Toolchain(f"CROSS_COMPILE={cross}", (cross + "gcc",), (ld or cross + "ld",), ("-march=armv8.4-a",))
    py = sys.executable or "python3"
    return Toolchain("ziglang", (py, "-m", "ziglang", "cc", "-target", "aarch64-freestanding",
                                 "-mcpu=generic+v8_4a+xs"), (py, "-m", "ziglang", "ld.lld"))


def cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """`$SMMU_HARNESS_CACHE`; else `.guest-cache/` in a writable source checkout; else the user's cache
    directory (`$XDG_CACHE_HOME/smmu-harness`, default `~/.cache/smmu-harness`): harness/locations.py's, for
    this module's GUEST_FW."""
    return _locations.cache_dir(env, GUEST_FW)


@dataclass(frozen=True)
class BuildResult:
    path: Path
    compiled: int          # objects compiled by this call (0 = every object came from the cache)
    linked: bool           # False when the ELF came from the cache

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)


def _sha(*parts: bytes | str) -> str:
    import hashlib

    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()


def _headers_digest(dirs: Iterable[Path]) -> str:
    import hashlib

    h = hashlib.sha256()
    for d in sorted({p.resolve() for p in dirs}):
        for f in sorted(d.glob("*.h")):
            h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def _run(cmd: Sequence[str], what: str) -> None:
    import subprocess

    try:
        r = subprocess.run(list(cmd), capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.SubprocessError) as e:
        raise BuildError(f"{what}: cannot run {cmd[0]}: {e}") from None
    if r.returncode != 0:
        out = (r.stderr or r.stdout).strip()
        raise BuildError(f"{what} failed (exit {r.returncode}):\n$ {shlex.join(cmd)}\n{out}")


def _atomic_target(final: Path) -> Path:
    import tempfile

    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=".tmp-", suffix=final.suffix)
    os.close(fd)
    return Path(tmp)


def build_options(src: Path) -> set[str]:
    """Options from a `smmu-harness-build:` comment in the first 5 lines of a source."""
    opts: set[str] = set()
    try:
        head = src.read_text(errors="replace").splitlines()[:5]
    except OSError:
        return opts
    for line in head:
        if "smmu-harness-build:" in line:
            rest = line.split("smmu-harness-build:", 1)[1]
            opts |= {w.strip(" */") for w in rest.split() if w.strip(" */")}
    return opts


_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"/]+)\.h"', re.M)


def _library_sources(srcs: list[Path]) -> list[Path]:
    """Runtime libraries a guest uses: guest_fw/lib/X.c for every `#include "X.h"` (transitively) that is not
    already among the sources (e.g. vsmmu.h -> vsmmu.c, pgtable.c)."""
    have = {p.resolve() for p in srcs}
    extra: list[Path] = []
    todo = [p for p in srcs if p.suffix == ".c"]
    while todo:
        src = todo.pop(0)
        for name in _INCLUDE.findall(src.read_text(errors="replace")):
            for f in (RUNTIME_DIR / f"{name}.c", RUNTIME_DIR / f"{name}.h"):
                if f.is_file() and f.resolve() not in have:
                    have.add(f.resolve())
                    todo.append(f)
                    if f.suffix == ".c":
                        extra.append(f)
    return extra


def build_guest(sources: Sequence[str | os.PathLike], *, output: str | os.PathLike | None = None,
                runtime: bool | None = None, cflags: Sequence[str] = (), ldflags: Sequence[str] = (),
                include_dirs: Sequence[str | os.PathLike] = (), toolchain: Toolchain | None = None,
                cache: str | os.PathLike | None = None, linker_script: str | os.PathLike | None = None,
                name: str | None = None, max_cpus: int | None = None, binary: bool = False) -> BuildResult:
    """Compile and link a guest from C/assembly sources (plus the runtime unless `runtime=False`); with
    `binary=True` the result (and `output`) is its flat binary (`flat_binary`) instead of the ELF.

    `max_cpus`: per-CPU stacks for that many CPUs (1-MAX_CPUS) instead of the link script's default 16: the
    link gets `--defsym=GUEST_NR_CPUS=N` and the compiles `-DNR_CPUS=N` (guest.h's per-CPU arrays)."""
    srcs = [Path(s) for s in sources]
    if not srcs:
        raise BuildInputError("no sources given")
    if max_cpus is not None:
        if not 1 <= max_cpus <= MAX_CPUS:
            raise BuildInputError(f"--max-cpus {max_cpus}: 1 to {MAX_CPUS}")
        cflags = [*cflags, f"-DNR_CPUS={max_cpus}"]
        ldflags = [*ldflags, f"--defsym=GUEST_NR_CPUS={max_cpus}"]
    for s in srcs:
        _check_source(s)
    for d in include_dirs:
        if not Path(d).is_dir():
            raise BuildInputError(f"-I {d}: {'not a directory' if Path(d).exists() else 'no such directory'}")
    out = Path(output) if output is not None else None
    if out is not None:
        check_output_path(out)
    if runtime is None:
        runtime = not any("no-runtime" in build_options(s) for s in srcs)
    tc = toolchain or toolchain_from_env()
    cdir = Path(cache) if cache is not None else cache_dir()
    script = Path(linker_script) if linker_script else LINKER_SCRIPT
    if not script.is_file():
        raise BuildInputError(f"{script}: no such linker script")
    incs = [RUNTIME_DIR, *(Path(d) for d in include_dirs)]
    try:
        return _compile_and_link(tc, srcs, runtime, incs, script, cdir, cflags, ldflags, name, out, binary)
    except OSError as e:            # the cache (or a header) cannot be read or written
        where = e.filename or cdir
        hint = " (set SMMU_HARNESS_CACHE to a writable directory)" if str(where).startswith(str(cdir)) else ""
        raise BuildInputError(f"{where}: {e.strerror or e}{hint}") from None


def _compile_and_link(tc: Toolchain, srcs: list[Path], runtime: bool, incs: list[Path], script: Path, cdir: Path,
                      cflags: Sequence[str], ldflags: Sequence[str], name: str | None,
                      out: Path | None, binary: bool = False) -> BuildResult:
    all_srcs = ([RUNTIME_DIR / r for r in RUNTIME_SOURCES] if runtime else []) + srcs
    if runtime:
        all_srcs += _library_sources(all_srcs)
    ident = tc.identity()
    flags = [*tc.arch_flags, *CFLAGS, *cflags, *(f"-I{d}" for d in incs)]
    objs: list[Path] = []
    keys: list[str] = []
    compiled = 0
    digests: dict[Path, str] = {}
    for s in all_srcs:
        # headers a source can include: the include path plus its own directory
        hdr = digests.get(s.parent) or digests.setdefault(s.parent, _headers_digest(incs + [s.parent]))
        key = _sha(ident, " ".join(flags), s.suffix, s.read_bytes(), hdr)
        obj = cdir / "obj" / f"{key[:32]}.o"
        if not obj.exists():
            tmp = _atomic_target(obj)
            try:
                _run([*tc.cc, *flags, "-c", str(s), "-o", str(tmp)], f"compiling {s}")
                os.replace(tmp, obj)
            finally:
                tmp.unlink(missing_ok=True)
            compiled += 1
        objs.append(obj)
        keys.append(key)
    lflags = [*LDFLAGS, *ldflags]
    stem = name or srcs[-1].stem
    lkey = _sha(ident, " ".join(lflags), script.read_bytes(), *keys)
    elf = cdir / "elf" / f"{stem}-{lkey[:16]}.elf"
    linked = False
    if not elf.exists():
        tmp = _atomic_target(elf)
        try:
            _run([*tc.ld, *lflags, "-T", str(script), "-o", str(tmp), *map(str, objs)], f"linking {stem}")
            os.replace(tmp, elf)
        finally:
            tmp.unlink(missing_ok=True)
        linked = True
    path = flat_binary(elf) if binary else elf
    if out is not None:
        try:
            if not out.exists() or out.read_bytes() != path.read_bytes():
                out.parent.mkdir(parents=True, exist_ok=True)
                import shutil
                shutil.copyfile(path, out)
        except OSError as e:
            raise BuildInputError(f"{out}: {e.strerror or e}") from None
        path = out
    return BuildResult(path, compiled, linked)


def _check_source(s: Path) -> None:
    """A source must be a readable regular file with a known suffix (one-line errors naming it)."""
    if s.is_dir():
        raise BuildInputError(f"{s}: is a directory, not a source file")
    if not s.is_file():
        raise BuildInputError(f"{s}: no such source file")
    if s.suffix not in _SOURCE_SUFFIXES:
        raise BuildInputError(f"{s}: unknown source type (use .c, .S or .s)")
    if not os.access(s, os.R_OK):
        raise BuildInputError(f"{s}: permission denied")


def check_output_path(out: Path, create_parents: bool = True) -> None:
    """`output` must name a file, not a directory; without `create_parents` (the CLI's `-o`, like `cc -o`) its
    directory must already exist."""
    if out.is_dir():
        raise BuildInputError(f"-o {out}: is a directory (give the ELF's file name, e.g. {out / 'guest.elf'})")
    if not create_parents and not out.parent.is_dir():
        raise BuildInputError(f"-o {out}: no such directory {out.parent}")


def flat_binary(elf: str | os.PathLike) -> Path:
    """`objcopy -O binary` of `elf`, cached next to it as `.bin`: the file bytes of every PT_LOAD segment at
    (physical address - the lowest one), gaps zero; zero-fill (.bss) is not included (the runtime clears it)."""
    from .elfload import ElfLoadError, load_elf

    src = Path(elf)
    out = src.with_suffix(".bin")
    if out.exists() and out.stat().st_mtime >= src.stat().st_mtime:
        return out
    try:
        segs = [s for s in load_elf(src).segments if s.data]
    except ElfLoadError as e:
        raise BuildError(str(e)) from None
    low = min(s.paddr for s in segs)
    image = bytearray(max(s.paddr + len(s.data) for s in segs) - low)
    for s in segs:
        image[s.paddr - low:s.paddr - low + len(s.data)] = s.data
    tmp = _atomic_target(out)
    try:
        tmp.write_bytes(bytes(image))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def test_guest_sources() -> dict[str, Path]:
    """The sample/test guests shipped in guest_fw/tests: name -> source."""
    return {p.stem: p for p in sorted(TESTS_DIR.iterdir()) if p.suffix in _SOURCE_SUFFIXES}


def build_test_guest(name: str, **kw) -> BuildResult:
    """Build guest_fw/tests/<name>.{c,S} (cached)."""
    srcs = test_guest_sources()
    if name not in srcs:
        raise BuildError(f"no guest named {name!r} in {TESTS_DIR} (have: {', '.join(srcs)})")
    return build_guest([srcs[name]], name=name, **kw)
