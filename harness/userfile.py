"""Files the user names on the command line (images, device trees): open them so that every failure is the
caller's own exception type with a one-line message naming the file, never an OSError traceback."""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import BinaryIO, Iterator

__all__ = ["user_file"]


@contextmanager
def user_file(path: str | os.PathLike, error: type[Exception]) -> Iterator[BinaryIO]:
    """`with user_file(path, ImageError) as f:` opens `path` for reading; a missing file, a directory or a
    read failure raises `error("PATH: ...")`."""
    spath = str(path)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise error(f"{spath}: no such file") from None
    except IsADirectoryError:
        raise error(f"{spath}: is a directory") from None
    except OSError as e:
        raise error(f"{spath}: cannot read: {e.strerror or e}") from None
    try:
        with f:
            yield f
    except OSError as e:
        raise error(f"{spath}: cannot read: {e.strerror or e}") from None
