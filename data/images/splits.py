"""Images with their labels, and seeded disjoint subsets of them."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Images:
    """uint8 images (n, channels, h, w), int64 labels, and the pixel value that means 1."""

    x: torch.Tensor
    y: torch.Tensor
    scale: int

    def __len__(self) -> int:
        return len(self.y)

    def floats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Images as float32 in [0, 1], and labels."""
        return self.x.float() / self.scale, self.y

    def take(self, index: torch.Tensor) -> Images:
        return Images(self.x[index], self.y[index], self.scale)


def subset(images: Images, sizes: dict[str, int], seed: int) -> dict[str, Images]:
    """Disjoint random parts of the given sizes, drawn in order from one seeded permutation
    (so a part's images do not depend on the sizes of the parts after it)."""
    total = sum(sizes.values())
    if total > len(images):
        raise ValueError(f"sizes={sizes} is invalid: they add up to {total}, more than the "
                         f"{len(images)} images there are")
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(int(seed)))
    out, start = {}, 0
    for name, n in sizes.items():
        out[name] = images.take(order[start:start + n])
        start += n
    return out
