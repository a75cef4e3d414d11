"""scikit-learn's 8x8 digits (1,797 images, shipped with scikit-learn, no download)."""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits as _sklearn_digits

from .splits import Images


def load_digits() -> dict[str, Images]:
    """{"all": every image}, (n, 1, 8, 8) with values 0..16; there is no official split,
    so callers draw train/val/test with `subset`."""
    x, y = _sklearn_digits(return_X_y=True)
    return {"all": Images(torch.tensor(x, dtype=torch.uint8).view(-1, 1, 8, 8),
                          torch.tensor(y, dtype=torch.long), 16)}
