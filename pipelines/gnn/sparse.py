"""Sparse products with a fixed pattern, and dropout, for full-batch GNN training.

Two matrices never change during training: the node features of a bag-of-words graph
(Cora: 1.27 % non-zero) and the graph's propagation operator. Each is kept in CSR together
with its transpose's pattern, so both ``A @ B`` and its gradient ``Aᵀ @ G`` are single CSR
products; torch's own backward for a CSR product rebuilds the transpose every step (about
6x slower on Cora's features).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")


class SparseMatrix(nn.Module):
    """A constant sparse matrix in CSR, with the pattern of its transpose.

    ``values`` may be replaced per product (dropout on the non-zeros), never learned.
    The tensors are non-persistent buffers: they move with the module to its device and
    stay out of checkpoints.
    """

    def __init__(self, rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor,
                 shape: tuple[int, int]):
        super().__init__()
        self.shape = (int(shape[0]), int(shape[1]))
        order = torch.argsort(rows * self.shape[1] + cols)  # row-major: CSR order
        rows, cols, values = rows[order], cols[order], values[order]
        self.register_buffer("crow", _compress(rows, self.shape[0]), persistent=False)
        self.register_buffer("col", cols, persistent=False)
        self.register_buffer("values", values, persistent=False)
        self.symmetric = self.shape[0] == self.shape[1] and _is_symmetric(rows, cols, values,
                                                                          self.shape[0])
        if not self.symmetric:  # stable sort by column keeps rows ascending: the CSR of Aᵀ
            t_order = torch.sort(cols, stable=True).indices
            self.register_buffer("t_crow", _compress(cols[t_order], self.shape[1]),
                                 persistent=False)
            self.register_buffer("t_col", rows[t_order], persistent=False)
            self.register_buffer("t_order", t_order, persistent=False)

    @classmethod
    def from_dense(cls, x: torch.Tensor) -> SparseMatrix:
        rows, cols = x.nonzero(as_tuple=True)
        return cls(rows, cols, x[rows, cols], tuple(x.shape))

    @property
    def nnz(self) -> int:
        return self.col.numel()

    def matmul(self, dense: torch.Tensor, values: torch.Tensor | None = None) -> torch.Tensor:
        """``A @ dense``, with ``values`` in place of the stored non-zeros if given."""
        values = self.values if values is None else values
        if values.requires_grad:
            raise ValueError("SparseMatrix.matmul has no gradient for the matrix values")
        return _CSRProduct.apply(values, dense, self)

    def dropout(self, p: float, training: bool) -> torch.Tensor:
        """The non-zeros after dropout: each kept with probability 1 - p and scaled by
        1 / (1 - p), as dense dropout treats them (its zeros stay zero either way)."""
        return dropout(self.values, p, training)

    def csr(self, values: torch.Tensor) -> torch.Tensor:
        return torch.sparse_csr_tensor(self.crow, self.col, values, self.shape,
                                       check_invariants=False)

    def transposed_csr(self, values: torch.Tensor) -> torch.Tensor:
        if self.symmetric:
            return self.csr(values)
        return torch.sparse_csr_tensor(self.t_crow, self.t_col, values[self.t_order],
                                       self.shape[::-1], check_invariants=False)


class _CSRProduct(torch.autograd.Function):
    """``A @ B`` with ``dB = Aᵀ @ dB_out``, computed in the values' dtype (a mixed-precision
    run may hand in bf16 activations; CSR kernels want one dtype)."""

    @staticmethod
    def forward(ctx, values, dense, matrix):
        ctx.matrix, ctx.dtype = matrix, dense.dtype
        ctx.save_for_backward(values)
        return (matrix.csr(values) @ dense.to(values.dtype).contiguous()).to(dense.dtype)

    @staticmethod
    def backward(ctx, grad):
        (values,) = ctx.saved_tensors
        if not ctx.needs_input_grad[1]:
            return None, None, None
        grad = ctx.matrix.transposed_csr(values) @ grad.to(values.dtype).contiguous()
        return None, grad.to(ctx.dtype), None


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """``F.dropout``; on CPU the mask comes from ``torch.rand`` (``u >= p``: kept with
    probability 1 - p), about twice as fast as torch's CPU Bernoulli sampler, same law."""
    if not training or p == 0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, True)
    return x * torch.rand_like(x).ge_(p).mul_(1.0 / (1.0 - p))


def _compress(sorted_index: torch.Tensor, length: int) -> torch.Tensor:
    counts = torch.bincount(sorted_index, minlength=length)
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)])


def _is_symmetric(rows, cols, values, n: int) -> bool:
    """Whether the (row-major sorted) triplets of an n x n matrix equal its transpose's."""
    order = torch.argsort(cols * n + rows)
    return bool(torch.equal(rows, cols[order]) and torch.equal(cols, rows[order])
                and torch.equal(values, values[order]))
