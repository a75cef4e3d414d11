"""Checkpoints written atomically and read without pickle.

A crash while saving leaves the previous checkpoint intact, never a truncated one. Reading
uses ``torch.load(weights_only=True)``: tensors and plain containers only, so a crafted file
cannot run code; anything else is refused with a message naming the file.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from .errors import FileError
from .files import atomic_write

CHECKPOINT = "an adamlab checkpoint (.ckpt) written by `adamlab train`"


def load(path, map_location="cpu", mmap: bool = False) -> dict:
    """A checkpoint as a dict of tensors and plain values; FileError if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise FileError(path, "no such file", CHECKPOINT)
    if path.stat().st_size == 0:
        raise FileError(path, "empty file", CHECKPOINT)
    try:
        loaded = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise FileError(path, f"refused to unpickle code or objects that are not plain data "
                        f"({first[:200]})", CHECKPOINT) from None
    except (RuntimeError, OSError, EOFError, ValueError, zipfile.BadZipFile, KeyError) as error:
        raise FileError(path, f"truncated or not a torch checkpoint ({type(error).__name__}: "
                        f"{str(error).splitlines()[0][:200] if str(error) else ''})",
                        CHECKPOINT) from None
    if not isinstance(loaded, dict):
        raise FileError(path, f"holds a {type(loaded).__name__}, not a checkpoint dict",
                        CHECKPOINT)
    return loaded


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint, path, storage_options=None):
        atomic_write(path, lambda f: torch.save(checkpoint, f))

    def load_checkpoint(self, path, map_location=lambda storage, loc: storage,
                        weights_only=None):
        return load(path, map_location=map_location)
