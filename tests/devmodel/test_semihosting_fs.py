"""Host files through semihosting, confined to the root (devmodel/semihosting_fs.py): fopen modes as the spec
gives them, and every way out refused -- `..`, absolute names, symbolic links inside or pointing out (also one
swapped in while the guest opens), device files and FIFOs, NUL bytes, over-long names -- for SYS_OPEN,
SYS_REMOVE, SYS_RENAME and SYS_SYSTEM. A secret file and directory sit next to the root: after every test they
are unchanged, nothing new exists outside the root, and no guest buffer ever held the secret."""
from __future__ import annotations

import errno
import os
import stat
import threading
import time

import pytest

from devmodel.semihosting_fs import MODE_FLAGS, ConfinedRoot, open_flags

from semihosting_env import UNMAPPED, Env

SECRET = b"TOP SECRET\n"


@pytest.fixture
def world(tmp_path):
    root = tmp_path / "root"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "inside.txt").write_bytes(b"inside\n")
    (root / "sub" / "nested.txt").write_bytes(b"nested\n")
    (tmp_path / "secret.txt").write_bytes(SECRET)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "f").write_bytes(SECRET)
    os.symlink("../secret.txt", root / "link_out")
    os.symlink(str(tmp_path / "secret.txt"), root / "abs_link_out")
    os.symlink("inside.txt", root / "link_in")
    os.symlink("../outside", root / "dirlink")
    os.symlink("../created-through-link", root / "dangling")
    before = _outside(tmp_path)
    yield tmp_path, root
    assert _outside(tmp_path) == before                    # nothing outside the root changed
    assert (tmp_path / "secret.txt").read_bytes() == SECRET


def _outside(tmp_path):
    return {str(p.relative_to(tmp_path)): (p.is_symlink(), p.read_bytes() if p.is_file() and not p.is_symlink()
                                           else None)
            for p in tmp_path.rglob("*") if "root" not in p.relative_to(tmp_path).parts}


def _env(root, **kw):
    env = Env(root=root, **kw)
    return env


def _read_all(env, name):
    h = env.open(name, 0)
    if h < 0:
        return h, env.errno, b""
    left, data = env.readh(h, 256)
    env.ret(0x02, h)
    return h, 0, data


def _no_secret(env):
    assert SECRET not in env.bus.read_bytes(0x4000_0000, 1 << 20)
    assert all(SECRET not in d for _, d in env.out)


# -- modes ------------------------------------------------------------------------------------------------
def test_mode_table_is_fopen():
    R, W, RW, C, T, A = os.O_RDONLY, os.O_WRONLY, os.O_RDWR, os.O_CREAT, os.O_TRUNC, os.O_APPEND
    assert MODE_FLAGS == (R, R, RW, RW, W | C | T, W | C | T, RW | C | T, RW | C | T, W | C | A, W | C | A,
                          RW | C | A, RW | C | A)
    with pytest.raises(ValueError):
        open_flags(12)


def test_read_write_truncate_append_as_fopen(world):
    _, root = world
    env = _env(root)
    h = env.open("new.txt", 4)                                           # w: create
    assert h == 1 and env.write(h, b"hello") == 0 and env.ret(0x02, h) == 0
    assert (root / "new.txt").read_bytes() == b"hello"
    assert stat.S_IMODE(os.stat(root / "new.txt").st_mode) & 0o600 == 0o600
    h = env.open("new.txt", 8)                                           # a: writes go to the end
    assert env.write(h, b"XY") == 0 and env.ret(0x0C, h) == 7
    assert env.readh(h, 4)[0] == 4 and env.errno == errno.EBADF          # write-only
    env.ret(0x02, h)
    assert (root / "new.txt").read_bytes() == b"helloXY"
    h = env.open("new.txt", 10)                                          # a+: read anywhere, append
    assert env.readh(h, 3) == (0, b"hel") and env.write(h, b"Q") == 0
    env.ret(0x02, h)
    assert (root / "new.txt").read_bytes() == b"helloXYQ"
    h = env.open("new.txt", 2)                                           # r+: overwrite in place
    assert env.write(h, b"J") == 0 and env.ret(0x0A, h, 0) == 0 and env.readh(h, 8) == (0, b"JelloXYQ")
    env.ret(0x02, h)
    h = env.open("new.txt", 0)                                           # r
    assert env.write(h, b"zz") == 2 and env.errno == errno.EBADF
    assert env.ret(0x0A, h, 5) == 0 and env.readh(h, 10) == (7, b"XYQ") and env.readh(h, 4) == (4, b"")
    assert env.ret(0x0A, h, -1) == -1 and env.errno == errno.EINVAL
    assert env.ret(0x09, h) == 0 and env.errno == errno.ENOTTY
    env.ret(0x02, h)
    h = env.open("new.txt", 6)                                           # w+: truncate, then read back
    assert env.ret(0x0C, h) == 0 and env.write(h, b"abc") == 0
    assert env.ret(0x0A, h, 0) == 0 and env.readh(h, 3) == (0, b"abc")
    env.ret(0x02, h)
    assert env.open("missing.txt", 0) == -1 and env.errno == errno.ENOENT
    assert env.open("sub/nested.txt", 1) > 0 and env.open("/sub/./nested.txt", 1) > 0


def test_read_into_a_bad_buffer_keeps_the_file_position(world):
    _, root = world
    env = _env(root)
    h = env.open("inside.txt", 0)
    assert env.ret(0x06, h, UNMAPPED, 4) == 4 and env.errno == errno.EFAULT
    assert env.readh(h, 7) == (0, b"inside\n")


def test_huge_lengths_move_in_bounded_chunks(world):
    _, root = world
    env = _env(root)
    sizes = []
    real = env.bus.read_bytes

    def spy(addr, size):
        sizes.append(size)
        return real(addr, size)

    env.bus.read_bytes = spy
    h = env.open("big.bin", 4)
    base = 0x4000_0000
    sizes.clear()
    left = env.ret(0x05, h, base, 1 << 62)                               # runs into the end of RAM
    assert left == (1 << 62) - (1 << 20) and env.errno == errno.EFAULT
    assert max(sizes) <= 64 << 10 and len(sizes) <= 1 + (1 << 20) // (64 << 10) + 1
    assert os.path.getsize(root / "big.bin") == 1 << 20
    env.ret(0x02, h)
    h = env.open("big.bin", 0)
    assert env.ret(0x06, h, base, 1 << 62) == (1 << 62) - (1 << 20)     # all of the file, then EOF
    assert env.ret(0x06, h, base, (1 << 64) - 1) == -1                  # at EOF: all 2**64 - 1 not read


def test_remove_and_rename_inside(world):
    _, root = world
    env = _env(root)
    a, b = env.string("inside.txt"), env.string("sub/renamed.txt")
    assert env.ret(0x0F, a, 10, b, 15) == 0
    assert (root / "sub" / "renamed.txt").read_bytes() == b"inside\n" and not (root / "inside.txt").exists()
    assert env.ret(0x0E, b, 15) == 0 and not (root / "sub" / "renamed.txt").exists()
    assert env.ret(0x0E, b, 15) == -1 and env.errno == errno.ENOENT
    d = env.string("sub/deeper")
    assert env.ret(0x0E, d, 10) == 0 and not (root / "sub" / "deeper").exists()    # remove(3): rmdir
    s = env.string("sub")
    assert env.ret(0x0E, s, 3) == -1 and env.errno == errno.ENOTEMPTY
    link = env.string("link_out")                                        # the link itself goes
    assert env.ret(0x0E, link, 8) == 0 and not os.path.lexists(root / "link_out")


def test_directories_and_the_root_itself(world):
    _, root = world
    env = _env(root)
    for name in ("sub", ".", "/", "sub/..", "sub/deeper/../.."):
        assert env.open(name, 0) == -1 and env.errno == errno.EISDIR, name
    assert env.open("", 0) == -1 and env.errno == errno.ENOENT
    for name in (".", "/", "sub/.."):
        p = env.string(name)
        assert env.ret(0x0E, p, len(name)) == -1 and env.errno == errno.EACCES
        q = env.string("x")
        assert env.ret(0x0F, p, len(name), q, 1) == -1 and env.errno == errno.EACCES
    assert env.open("inside.txt/x", 0) == -1 and env.errno == errno.ENOTDIR


# -- escapes ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,code", [
    ("../secret.txt", errno.EACCES), ("sub/../../secret.txt", errno.EACCES), ("..", errno.EACCES),
    ("sub/../../root/inside.txt", errno.EACCES), ("link_out", errno.EACCES), ("abs_link_out", errno.EACCES),
    ("link_in", errno.EACCES), ("dirlink/f", errno.EACCES), ("sub/../dirlink/f", errno.EACCES),
    ("dangling", errno.EACCES),
])
def test_escapes_are_refused_for_every_mode(world, name, code):
    _, root = world
    env = _env(root)
    for mode in range(12):
        assert env.open(name, mode) == -1 and env.errno == code, (name, mode)
    _no_secret(env)
    assert any(c == "guest_errors" for c, _ in env.log)


def test_absolute_names_resolve_inside_the_root(world):
    tmp, root = world
    env = _env(root)
    assert env.open(str(tmp / "secret.txt"), 0) == -1 and env.errno == errno.ENOENT
    assert env.open(str(tmp / "secret.txt"), 4) == -1 and env.errno == errno.ENOENT   # no such directories
    assert _read_all(env, "/inside.txt")[2] == b"inside\n"
    _no_secret(env)


def test_nul_in_a_name_ends_it(world):
    _, root = world
    env = _env(root)
    raw = b"inside.txt\0/../../secret.txt"
    h = env.ret(0x01, env.string(raw), 0, len(raw))                      # the C string is "inside.txt"
    assert h > 0 and env.readh(h, 32) == (25, b"inside\n")
    raw = b"\0../secret.txt"
    assert env.ret(0x01, env.string(raw), 0, len(raw)) == -1 and env.errno == errno.ENOENT
    _no_secret(env)


def test_over_long_names(world):
    _, root = world
    env = _env(root)
    long_comp = "x" * 300
    assert env.open(long_comp, 4) == -1 and env.errno == errno.ENAMETOOLONG
    deep = "/".join(["d"] * 2100)                                        # 4199 bytes
    assert env.open(deep, 0) == -1 and env.errno == errno.ENAMETOOLONG
    p = env.put(b"y" * 5000)                                             # no NUL within the limit
    assert env.ret(0x01, p, 0, -1) == -1 and env.errno == errno.ENAMETOOLONG      # length + 1 == 0
    assert env.ret(0x0E, p, (1 << 64) - 2) == -1 and env.errno == errno.ENAMETOOLONG


def test_remove_and_rename_cannot_reach_outside(world):
    tmp, root = world
    env = _env(root)
    out, inside = env.string("../secret.txt"), env.string("inside.txt")
    assert env.ret(0x0E, out, 13) == -1 and env.errno == errno.EACCES
    assert env.ret(0x0F, out, 13, inside, 10) == -1 and env.errno == errno.EACCES
    assert env.ret(0x0F, inside, 10, out, 13) == -1 and env.errno == errno.EACCES
    through = env.string("dirlink/f")
    assert env.ret(0x0E, through, 9) == -1 and env.errno == errno.EACCES
    assert env.ret(0x0F, inside, 10, through, 9) == -1 and env.errno == errno.EACCES
    dest = env.string("dirlink")                                         # renaming onto the link replaces it
    assert env.ret(0x0F, inside, 10, dest, 7) == 0
    assert (root / "dirlink").read_bytes() == b"inside\n" and (tmp / "outside" / "f").read_bytes() == SECRET
    abs_name = env.string(str(tmp / "secret.txt"))
    assert env.ret(0x0E, abs_name, len(str(tmp / "secret.txt"))) == -1 and env.errno == errno.ENOENT


def test_fifos_and_device_nodes_are_never_opened(world):
    _, root = world
    os.mkfifo(root / "fifo")
    env = _env(root)
    t = time.monotonic()
    for mode in (0, 2, 4, 8):
        assert env.open("fifo", mode) == -1 and env.errno == errno.EACCES
    assert time.monotonic() - t < 5                                      # and never blocked on the FIFO
    try:
        os.mknod(root / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except (PermissionError, OSError):
        pytest.skip("cannot create a device node here (needs CAP_MKNOD)")
    for mode in (0, 4):
        assert env.open("null", mode) == -1 and env.errno == errno.EACCES


def test_a_link_swapped_in_while_the_guest_opens_is_never_followed(world):
    tmp, root = world
    (root / "d").mkdir()
    (root / "d" / "f").write_bytes(b"inside\n")
    os.symlink(str(tmp / "outside"), root / "d_link")
    env = _env(root)
    stop = threading.Event()

    def swapper():
        while not stop.is_set():                                         # d: directory, link, directory, ...
            os.rename(root / "d", root / "d_dir")
            os.rename(root / "d_link", root / "d")
            os.rename(root / "d", root / "d_link")
            os.rename(root / "d_dir", root / "d")

    th = threading.Thread(target=swapper)
    th.start()
    seen = set()
    try:
        start = time.monotonic()
        # at least 0.3 s of racing; then until both outcomes were seen (at most 5 s)
        while (now := time.monotonic() - start) < 0.3 or (now < 5 and not {b"inside\n", errno.EACCES} <= seen):
            for mode in (0, 2):                                          # r and r+
                h = env.open("d/f", mode)
                if h < 0:
                    seen.add(env.errno)
                    continue
                left, data = env.readh(h, 64)
                env.ret(0x02, h)
                seen.add(data)
                assert data != SECRET
    finally:
        stop.set()
        th.join()
    assert b"inside\n" in seen and errno.EACCES in seen                 # the race was really run
    # refused as a link (EACCES), or seen as missing or as no directory while the swapper moves things
    assert seen <= {b"inside\n", errno.EACCES, errno.ENOENT, errno.ENOTDIR}
    _no_secret(env)


def test_tmpnam_names_live_in_the_root(world):
    _, root = world
    (root / "tmp").mkdir()
    env = _env(root, tmpnam_pid=7)
    buf = env.alloc(64)
    assert env.ret(0x0D, buf, 3, 64) == 0
    name = env.read(buf, 64).split(b"\0")[0]
    assert name == b"/tmp/qemu-703"
    h = env.open(name, 4)
    assert h > 0 and env.write(h, b"t") == 0
    assert (root / "tmp" / "qemu-703").read_bytes() == b"t"
    n = env.string(name)
    assert env.ret(0x0E, n, len(name)) == 0 and not (root / "tmp" / "qemu-703").exists()


# -- no root, SYS_SYSTEM -----------------------------------------------------------------------------------
def test_without_a_root_there_are_no_host_files(world):
    env = Env()
    for mode in range(12):
        assert env.open("inside.txt", mode) == -1 and env.errno == errno.ENOENT
    n = env.string("inside.txt")
    assert env.ret(0x0E, n, 10) == -1 and env.errno == errno.ENOENT
    assert env.ret(0x0F, n, 10, n, 10) == -1 and env.errno == errno.ENOENT
    assert [c for c, _ in env.log] == ["unimp"] * 14
    assert env.open(":tt", 4) == 1                                       # the console still works


def test_system_is_refused_unless_allowed(world):
    tmp, root = world
    cmd = b"echo owned > pwned.txt"
    for env in (Env(), _env(root), Env(allow_system=True)):
        c = env.string(cmd)
        assert env.ret(0x12, c, len(cmd)) == -1 and env.errno == errno.EACCES
        assert env.log[-1][0] == "unimp"
    assert not (root / "pwned.txt").exists() and not os.path.exists("pwned.txt")


def test_system_runs_in_the_root_when_allowed(world):
    _, root = world
    env = _env(root, allow_system=True)
    for cmd, status in ((b"pwd > where.txt", 0), (b"exit 3", 3 << 8), (b"kill -9 $$", 9), (b"", 0)):
        c = env.string(cmd)
        assert env.ret(0x12, c, len(cmd)) == status, cmd
    assert (root / "where.txt").read_text().strip() == os.path.realpath(root)
    c = env.string(b"echo out; echo err >&2")
    assert env.ret(0x12, c, 23) == 0
    assert env.stream(1) == b"out\n" and env.stream(2) == b"err\n"
    assert env.ret(0x12, c, 5) == -1 and env.errno == errno.EINVAL       # no NUL at the given length


def test_confined_root_direct_api(world):
    tmp, root = world
    with ConfinedRoot(root) as fs:
        f = fs.open(b"inside.txt", os.O_RDONLY)
        assert f.read(100) == b"inside\n" and f.flen() == 7 and not f.isatty()
        f.close()
        f.close()                                                        # idempotent
        with pytest.raises(OSError) as e:
            fs.open(b"../secret.txt", os.O_RDONLY)
        assert e.value.errno == errno.EACCES
        fs.rename(b"link_out", b"renamed_link")                          # the link moves, not its target
        assert os.readlink(root / "renamed_link") == "../secret.txt"
    with pytest.raises(NotADirectoryError):
        ConfinedRoot(tmp / "secret.txt")
