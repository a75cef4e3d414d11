"""Writes that a crash cannot tear: a temporary file, fsync, rename over the target, fsync the
directory. Files get the mode the umask allows (as ``open`` would), so group-shared project
directories keep working.

Temporary names are ``.adamlab-<random>.tmp``: they never contain the target's name, so no
glob or digit-scan for checkpoints (``hpc_ckpt_*``) can mistake one for a checkpoint.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

TMP_PREFIX, TMP_SUFFIX = ".adamlab-", ".tmp"


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (os.umask sets it)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in ``path`` durable (a no-op where directories cannot be
    opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path | str, write: Callable[[BinaryIO], None] | bytes | str) -> Path:
    """Replace ``path`` by what ``write(file)`` writes (or by the given bytes / text)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TMP_PREFIX, suffix=TMP_SUFFIX)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            if callable(write):
                write(f)
            else:
                f.write(write.encode() if isinstance(write, str) else write)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def is_temporary(path: Path) -> bool:
    return path.name.startswith(TMP_PREFIX) and path.name.endswith(TMP_SUFFIX)
