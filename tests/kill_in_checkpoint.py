"""`adamlab train` that SIGKILLs itself halfway through writing its N-th checkpoint.

    python tests/kill_in_checkpoint.py N train <overrides ...>

The kill test's way to land a kill inside a checkpoint write every time, not by luck.
"""

import os
import signal
import sys

import torch

from pipelines.cli import main

_save = torch.save
_count = 0
NTH = int(sys.argv[1])


def torn_save(obj, f, *args, **kwargs):
    global _count
    if not (isinstance(obj, dict) and "adamlab" in obj):  # not a checkpoint of the run
        return _save(obj, f, *args, **kwargs)
    _count += 1
    if _count < NTH:
        return _save(obj, f, *args, **kwargs)
    import io

    buffer = io.BytesIO()
    _save(obj, buffer, *args, **kwargs)
    f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)


torch.save = torn_save
sys.argv = [sys.argv[0], *sys.argv[2:]]
main(sys.argv[1:])
