"""Image classification data as uint8 tensors: Fashion-MNIST (offline from a local copy of
the upstream IDX files, else downloaded) and scikit-learn's 8x8 digits."""

from .digits import load_digits
from .fashion_mnist import load_fashion_mnist
from .splits import Images, subset

__all__ = ["Images", "load_digits", "load_fashion_mnist", "subset"]
