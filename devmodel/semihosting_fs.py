"""The host file system a semihosting guest may touch: one directory tree, opened race-free.

`ConfinedRoot(dir)` holds a file descriptor on the directory the user named and resolves every guest path
inside it, component by component, with `openat`-style calls relative to descriptors it holds (`dir_fd=`),
so nothing the host or the guest does between two calls can redirect a lookup outside:

* the root is the guest's `/` and its current directory: `a/b`, `/a/b` and `./a//b` all name `DIR/a/b`;
* `..` goes back up the descriptors already held (never a lookup of `..` on the host) and fails with EACCES
  at the root;
* symbolic links are never followed, wherever they point (inside or outside): a directory component that
  is a link, or a final name that is a link, fails with EACCES (`O_NOFOLLOW` on every open, so a link
  swapped in between two calls is refused too);
* only regular files are opened: a directory gives EISDIR, anything else (device nodes, FIFOs, sockets)
  EACCES, decided by an `lstat` before the open (so a device is never opened) and checked again on the
  descriptor after it (same inode, still a regular file);
* names are bytes without NUL (the caller cuts a C string at its NUL); over-long names fail with the
  host's ENAMETOOLONG.

Not covered (documented in docs/semihosting.md): a hard link inside the root to a file outside it looks
like any regular file (only someone with write access to both trees can create one), and a host process
racing the guest could make an `O_CREAT`/`O_TRUNC` open act on a file it swapped in between the `lstat` and
the open (the descriptor check then refuses it, but the truncation has happened).

Errors are `OSError`s carrying the errno the guest reads with SYS_ERRNO (host values, as QEMU passes them).
Open modes follow "Semihosting for AArch32 and AArch64" (Arm, 2020Q4), SYS_OPEN "Value of mode": the ISO C
`fopen` modes r, rb, r+, r+b, w, wb, w+, w+b, a, ab, a+, a+b.
"""
from __future__ import annotations

import errno
import os
import stat

__all__ = ["ConfinedRoot", "HostFile", "open_flags", "MODE_FLAGS"]

_R, _W, _RW = os.O_RDONLY, os.O_WRONLY, os.O_RDWR
_CT, _CA = os.O_CREAT | os.O_TRUNC, os.O_CREAT | os.O_APPEND
# SYS_OPEN mode 0-11 -> open(2) flags of the fopen mode (ISO C 7.21.5.3): r, r+, w, w+, a, a+ (each with b).
MODE_FLAGS = (_R, _R, _RW, _RW, _W | _CT, _W | _CT, _RW | _CT, _RW | _CT, _W | _CA, _W | _CA, _RW | _CA, _RW | _CA)

_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE_MODE = 0o644                 # as QEMU passes to open(2) (semihosting/arm-compat-semi.c SYS_OPEN)


def open_flags(mode: int) -> int:
    """open(2) flags for SYS_OPEN mode 0-11 (ValueError outside)."""
    if not 0 <= mode < len(MODE_FLAGS):
        raise ValueError(f"SYS_OPEN mode {mode} is not 0-11")
    return MODE_FLAGS[mode]


def _err(code: int, name: bytes = b"") -> OSError:
    return OSError(code, os.strerror(code), os.fsdecode(name) if name else None)


class HostFile:
    """An open regular file of the root (owns its descriptor)."""

    __slots__ = ("fd",)
    interactive = False              # reads return all that is asked, up to the end of the file

    def __init__(self, fd: int):
        self.fd = fd

    def read(self, n: int) -> bytes:
        return os.read(self.fd, n)

    def unread(self, data: bytes) -> None:
        """Move the position back over `data`, just read (its copy to the guest failed)."""
        if data:
            os.lseek(self.fd, -len(data), os.SEEK_CUR)

    def write(self, data: bytes) -> int:
        return os.write(self.fd, data)

    def seek(self, offset: int) -> None:
        os.lseek(self.fd, offset, os.SEEK_SET)

    def flen(self) -> int:
        return os.fstat(self.fd).st_size

    def isatty(self) -> bool:
        return False                 # only regular files are ever opened

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)


class ConfinedRoot:
    """Guest paths resolved inside one host directory (see the module docstring)."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    def __enter__(self) -> "ConfinedRoot":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- resolution ---------------------------------------------------------------------------------
    def _walk(self, name: bytes) -> tuple[list[int], bytes | None]:
        """Open the directories leading to the last component of `name`.

        Returns the stack of descriptors opened (the caller closes them; the last one, or the root when the
        stack is empty, is the parent) and the last component, or None when the name designates a directory
        reached by `.`/`..`/the root itself."""
        if not name:
            raise _err(errno.ENOENT)
        parts = [p for p in name.split(b"/") if p and p != b"."]
        stack: list[int] = []
        try:
            for i, part in enumerate(parts):
                last = i == len(parts) - 1
                if part == b"..":
                    if not stack:
                        raise _err(errno.EACCES, name)          # above the root
                    os.close(stack.pop())
                    continue
                if last:
                    return stack, part
                stack.append(self._open_dir(stack[-1] if stack else self.fd, part, name))
            return stack, None
        except BaseException:
            for fd in stack:
                os.close(fd)
            raise

    @staticmethod
    def _open_dir(parent: int, part: bytes, name: bytes) -> int:
        try:
            return os.open(part, _DIR_FLAGS, dir_fd=parent)
        except OSError as e:
            if e.errno in (errno.ENOTDIR, errno.ELOOP) and _is_link(parent, part):
                raise _err(errno.EACCES, name) from None        # a symbolic link: never followed
            raise

    # -- operations ---------------------------------------------------------------------------------
    def open(self, name: bytes, flags: int) -> HostFile:
        """Open regular file `name` with open(2) `flags` (from `open_flags`)."""
        stack, leaf = self._walk(name)
        try:
            if leaf is None:
                raise _err(errno.EISDIR, name)
            parent = stack[-1] if stack else self.fd
            before = _lstat(parent, leaf)
            if before is None:
                if not flags & os.O_CREAT:
                    raise _err(errno.ENOENT, name)
            else:
                _check_regular(before.st_mode, name)
            try:
                fd = os.open(leaf, flags | _FILE_FLAGS, _CREATE_MODE, dir_fd=parent)
            except OSError as e:
                if e.errno == errno.ELOOP:
                    raise _err(errno.EACCES, name) from None    # a link appeared at the name
                raise
            try:
                after = os.fstat(fd)
                _check_regular(after.st_mode, name)
                if before is not None and (before.st_dev, before.st_ino) != (after.st_dev, after.st_ino):
                    raise _err(errno.EACCES, name)              # swapped between lstat and open
                os.set_blocking(fd, True)
            except BaseException:
                os.close(fd)
                raise
            return HostFile(fd)
        finally:
            for d in stack:
                os.close(d)

    def remove(self, name: bytes) -> None:
        """remove(3): unlink a file (a link is removed itself, never its target) or rmdir an empty directory."""
        stack, leaf = self._walk(name)
        try:
            if leaf is None:
                raise _err(errno.EACCES, name)
            parent = stack[-1] if stack else self.fd
            try:
                os.unlink(leaf, dir_fd=parent)
            except IsADirectoryError:
                os.rmdir(leaf, dir_fd=parent)
        finally:
            for d in stack:
                os.close(d)

    def rename(self, old: bytes, new: bytes) -> None:
        """rename(2) inside the root (names of links are renamed, their targets untouched)."""
        ostack, oleaf = self._walk(old)
        try:
            nstack, nleaf = self._walk(new)
            try:
                if oleaf is None or nleaf is None:
                    raise _err(errno.EACCES, old if oleaf is None else new)
                os.rename(oleaf, nleaf, src_dir_fd=ostack[-1] if ostack else self.fd,
                          dst_dir_fd=nstack[-1] if nstack else self.fd)
            finally:
                for d in nstack:
                    os.close(d)
        finally:
            for d in ostack:
                os.close(d)


def _lstat(parent: int, leaf: bytes) -> os.stat_result | None:
    try:
        return os.stat(leaf, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _is_link(parent: int, leaf: bytes) -> bool:
    st = _lstat(parent, leaf)
    return st is not None and stat.S_ISLNK(st.st_mode)


def _check_regular(mode: int, name: bytes) -> None:
    if stat.S_ISREG(mode):
        return
    raise _err(errno.EISDIR if stat.S_ISDIR(mode) else errno.EACCES, name)
