"""Differential test: every preset that torch.optim also has, against torch.optim, in every
layout torch accepts, 300 steps a case.

A seeded generator draws each case: the preset, our path (fused lowering where it
applies, or transform by transform), 1-3 param groups with their own hyperparameters,
parameters of random shapes and layouts (contiguous, transposed, strided slices,
channels_last, 0-dim, empty, complex, float32/float64 mixed in a group, bf16/fp16),
gradients in the parameter's layout or another one, missing on some steps or starting
late, global-norm clipping, a non-finite step under skip_nonfinite, and at a random step a
state_dict round trip (ours through torch.save, or torch's own state_dict loaded into a
fresh adamlab optimizer). 16-bit parameters are compared with torch on float32 weights
(our float32 master).

The gradient is g = a (p - target) + noise, computed as a p + (noise - a target) (noise
only for 16-bit parameters, whose rounding would feed back), for both optimizers at once
in two multi-tensor ops a step, into buffers in each gradient's layout: the harness costs
a fraction of the two steps it compares. torch runs its multi-tensor (foreach) step, the
path adamlab's transforms follow op for op; the fused lowering is an ulp per step away
from it (as torch's fused kernel is from torch's own foreach step), well inside the
tolerances (relative 1e-6 in float32, 1e-10 in float64). The CPU cases are independent and
run in two forked workers of one thread each (``ADAMLAB_TEST_WORKERS=1``: in this process).
"""

from __future__ import annotations

import copy
import functools
import io
import math
import multiprocessing
import os
import random
import traceback

import pytest
import torch

import optim

STEPS = 300
TOL = {torch.float32: 1e-6, torch.float64: 1e-10}
CASES_PER_TEST = 25
LOW = (torch.bfloat16, torch.float16)

TORCH = {
    "adam": (torch.optim.Adam, {}), "adam_l2": (torch.optim.Adam, {}),
    "amsgrad": (torch.optim.Adam, {"amsgrad": True}), "adamw": (torch.optim.AdamW, {}),
    "nadam": (torch.optim.NAdam, {}),
    "nadamw": (torch.optim.NAdam, {"decoupled_weight_decay": True}),
    "radam": (torch.optim.RAdam, {}),
    "radamw": (torch.optim.RAdam, {"decoupled_weight_decay": True}),
    "adamax": (torch.optim.Adamax, {}), "sgd": (torch.optim.SGD, {}),
    "rmsprop": (torch.optim.RMSprop, {}),
}


def hyperparameters(name: str, rng: random.Random) -> dict:
    """A random setting of the preset's own arguments (valid for torch too)."""
    def lr(lo, hi):
        return 10 ** rng.uniform(math.log10(lo), math.log10(hi))

    betas = (rng.uniform(0.5, 0.95), rng.uniform(0.9, 0.9999))
    wd = rng.choice([0.0, 10 ** rng.uniform(-3, -1)])
    if name in ("adam", "adam_l2", "amsgrad", "adamw", "nadam", "nadamw", "radam", "radamw",
                "adamax"):
        hp = {"lr": lr(1e-3, 3e-2), "betas": betas, "eps": rng.choice([1e-8, 1e-6]),
              "weight_decay": wd}
        if name in ("adam", "adamw") and rng.random() < 0.3:
            hp["amsgrad"] = True
        if name in ("nadam", "nadamw") and rng.random() < 0.5:
            hp["momentum_decay"] = rng.uniform(1e-3, 1e-2)
        return hp
    if name == "sgd":
        momentum = rng.choice([0.0, rng.uniform(0.5, 0.95)])
        nesterov = momentum > 0 and rng.random() < 0.4
        dampening = 0.0 if nesterov or momentum == 0 else rng.choice([0.0, 0.3])
        return {"lr": lr(1e-3, 3e-2), "momentum": momentum, "dampening": dampening,
                "nesterov": nesterov, "weight_decay": wd}
    return {"lr": lr(1e-4, 1e-2), "alpha": rng.uniform(0.8, 0.999), "weight_decay": wd,
            "momentum": rng.choice([0.0, rng.uniform(0.3, 0.9)]),
            "centered": rng.random() < 0.4, "eps": 1e-8}


class Param:
    """A recipe for one parameter: how to build it (twice, identically) and its gradients."""

    def __init__(self, rng: random.Random, group_dtype: torch.dtype):
        self.layout = rng.choice(["contiguous", "contiguous", "transposed", "strided",
                                  "channels_last", "scalar", "empty", "complex", "low"])
        self.dtype = group_dtype if rng.random() < 0.8 else (
            torch.float64 if group_dtype == torch.float32 else torch.float32)
        if self.layout == "low":
            self.dtype = rng.choice(LOW)
        if self.layout == "complex":
            self.dtype = torch.complex64 if self.dtype == torch.float32 else torch.complex128
        self.shape = {"scalar": (), "empty": rng.choice([(0,), (3, 0)]),
                      "channels_last": (2, 3, 2, 2)}.get(
            self.layout, tuple(rng.randint(1, 5) for _ in range(rng.choice([1, 2, 2]))))
        if self.layout in ("transposed", "strided") and len(self.shape) < 2:
            self.shape = (rng.randint(2, 4), rng.randint(2, 5))
        self.grad_layout = rng.choice(["contiguous", "like_param", "like_param", "transposed"])
        self.seed = rng.randrange(2**31)
        self.start = rng.choice([0, 0, 0, rng.randrange(STEPS // 2)])  # late gradients
        self.missing = rng.choice([0.0, 0.0, 0.2])  # fraction of steps without a gradient
        gen = torch.Generator().manual_seed(self.seed)
        real = torch.float32 if self.dtype in LOW else self.dtype
        self.a = 0.5 + torch.rand(self.shape, generator=gen, dtype=real.to_real()
                                  if real.is_complex else real)
        target = torch.randn(self.shape, generator=gen, dtype=real)
        noise = 0.1 * torch.randn((STEPS, *self.shape), generator=gen, dtype=real)
        self.skip = (torch.rand(STEPS, generator=gen) < self.missing).tolist()
        if self.dtype in LOW:  # ours takes the rounded noise, torch its float32 value
            self.offset, self.master_offset = noise, noise.to(self.dtype).float()
        else:  # g = a p + offset
            self.offset = self.master_offset = noise - self.a * target
        self.device = "cpu"

    @property
    def compute_dtype(self):
        return torch.float32 if self.dtype in LOW else self.dtype

    def to(self, device: str) -> Param:
        """The same recipe with its tensors on ``device``."""
        for key in ("a", "offset", "master_offset"):
            setattr(self, key, getattr(self, key).to(device))
        self.device = device
        return self

    def make(self, master: bool = False) -> torch.Tensor:
        """The parameter (``master``: torch's float32 stand-in for a 16-bit one)."""
        gen = torch.Generator().manual_seed(self.seed + 1)
        dtype, device = self.compute_dtype, self.device
        if self.layout == "transposed":
            t = torch.randn(self.shape[::-1], generator=gen, dtype=dtype).to(device).t()
        elif self.layout == "strided":
            t = torch.randn(self.shape[0], 2 * self.shape[1], generator=gen,
                            dtype=dtype).to(device)[:, ::2]
        elif self.layout == "channels_last":
            t = torch.randn(self.shape, generator=gen, dtype=dtype).to(
                device, memory_format=torch.channels_last)
        else:
            t = torch.randn(self.shape, generator=gen, dtype=dtype).to(device)
        if self.dtype in LOW and not master:
            t = t.to(self.dtype)
        elif self.dtype in LOW:
            t = t.to(self.dtype).float()
        return t.detach().requires_grad_()

    def active(self, step: int) -> bool:
        return step >= self.start and not self.skip[step]

    def grad_buffer(self, p: torch.Tensor) -> torch.Tensor:
        """A gradient for ``p`` in this recipe's gradient layout."""
        if self.grad_layout == "contiguous":
            return torch.empty(p.shape, dtype=p.dtype, device=p.device)
        if self.grad_layout == "transposed" and p.ndim == 2:
            return torch.empty(p.shape[::-1], dtype=p.dtype, device=p.device).t()
        return torch.empty_like(p)


class Case:
    def __init__(self, seed: int, device: str = "cpu"):
        rng = random.Random(seed)
        self.seed = seed
        self.name = rng.choice(sorted(TORCH))
        self.fused = rng.choice([None, None, False])
        dtype = rng.choice([torch.float32, torch.float64])
        self.shared = hyperparameters(self.name, rng)
        self.groups = []
        for _ in range(rng.choice([1, 1, 2, 3])):
            own = hyperparameters(self.name, rng)
            overrides = {k: own[k] for k in own if rng.random() < 0.3}
            if self.name == "sgd":  # nesterov needs momentum > 0 and no dampening
                merged = {**self.shared, **overrides}
                if merged["nesterov"] and (merged["momentum"] == 0 or merged["dampening"]):
                    overrides["nesterov"] = False
            self.groups.append(([Param(rng, dtype) for _ in range(rng.randint(1, 3))],
                                overrides))
        self.clip = rng.choice([None, None, None, 10 ** rng.uniform(-1.5, 0)])
        self.nan_step = rng.choice([None, None, None, rng.randrange(STEPS)])
        self.save_step = rng.randrange(STEPS)
        for ps, _ in self.groups:
            for p in ps:
                p.to(device)
        low = any(p.dtype in LOW for ps, _ in self.groups for p in ps)
        self.interop = not low and rng.random() < 0.5  # torch's state_dict into ours

    def __repr__(self) -> str:
        params = [[(p.layout, str(p.dtype), p.shape, p.grad_layout) for p in ps]
                  for ps, _ in self.groups]
        return (f"Case(seed={self.seed}, {self.name}, fused={self.fused}, clip={self.clip}, "
                f"nan_step={self.nan_step}, interop={self.interop}, params={params})")

    def ours(self, params):
        groups = [{"params": ps, **o} for ps, (_, o) in zip(params, self.groups)]
        extra = {"clip": self.clip} if self.clip else {}
        if self.nan_step is not None:
            extra["skip_nonfinite"] = True
        return optim.create(self.name, groups, fused=self.fused, **self.shared, **extra)

    def reference(self, params):
        cls, fixed = TORCH[self.name]
        groups = [{"params": ps, **o} for ps, (_, o) in zip(params, self.groups)]
        return cls(groups, **self.shared, **fixed, foreach=True)


class Gradients:
    """Each step's gradients of several parameter sets (ours and torch's), written into
    buffers in each recipe's gradient layout by two multi-tensor ops for all of them."""

    def __init__(self, recipes, param_sets):
        """``param_sets``: (params, master) pairs, master for torch's float32 stand-ins."""
        self.grads, self.buffers, self.offsets = [], [], []
        smooth = []
        for params, master in param_sets:
            for r, p in zip(recipes, params):
                buffer = r.grad_buffer(p)
                self.grads.append((p, buffer))
                self.buffers.append(buffer)
                self.offsets.append((r.master_offset if master else r.offset).unbind(0))
                if r.dtype not in LOW:
                    smooth.append((buffer, r.a, p.detach()))
        self.smooth = [list(t) for t in zip(*smooth)] if smooth else None
        self.copies = len(param_sets)

    def __call__(self, step: int, active: list) -> None:
        """Set every p.grad for ``step``: None where ``active`` (per recipe) says so."""
        torch._foreach_copy_(self.buffers, [o[step] for o in self.offsets])
        if self.smooth:
            torch._foreach_addcmul_(*self.smooth)
        for (p, g), on in zip(self.grads, active * self.copies):
            p.grad = g if on else None


def unobserved_step(ref: torch.optim.Optimizer):
    """torch's ``ref.step`` without the wrapper torch puts around every step to name it for
    the profiler and run the step hooks (none here): it computes nothing and costs about a
    fifth of a small step."""
    step = type(ref).step
    return functools.partial(step.__wrapped__, ref) if getattr(step, "hooked", False) else ref.step


def run(case: Case):
    ours_p = [[r.make() for r in ps] for ps, _ in case.groups]
    ref_p = [[r.make(master=True) for r in ps] for ps, _ in case.groups]
    recipes = [r for ps, _ in case.groups for r in ps]
    flat_ours = [p for ps in ours_p for p in ps]
    flat_ref = [p for ps in ref_p for p in ps]
    opt, ref = case.ours(ours_p), case.reference(ref_p)
    gradients = Gradients(recipes, [(flat_ours, False), (flat_ref, True)])
    ref_step = unobserved_step(ref)
    for step in range(STEPS):
        active = [r.active(step) for r in recipes]
        gradients(step, active)
        poisoned = [p for p in flat_ours if p.grad is not None and p.numel()
                    ] if step == case.nan_step else None
        if poisoned:
            poisoned[0].grad = poisoned[0].grad.clone().fill_(float("nan"))
        else:
            if case.clip:
                torch.nn.utils.clip_grad_norm_([q for q in flat_ref if q.grad is not None],
                                               case.clip)
            ref_step()
        opt.step()
        if step == case.save_step:
            fresh = case.ours(ours_p)
            if case.interop:  # a copy, as from a file: load_state_dict keeps the tensors
                fresh.load_state_dict(copy.deepcopy(ref.state_dict()))
            else:
                buffer = io.BytesIO()
                torch.save(opt.state_dict(), buffer)
                buffer.seek(0)
                fresh.load_state_dict(torch.load(buffer, weights_only=True))
            opt = fresh
    return opt, ref, recipes, flat_ours, flat_ref


def real(t: torch.Tensor) -> torch.Tensor:
    t = t.detach()
    return torch.view_as_real(t) if t.is_complex() else t


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = real(a).double(), real(b).double()
    if b.numel() == 0:
        return 0.0
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def check(case: Case) -> None:
    opt, ref, recipes, flat_ours, flat_ref = run(case)
    # a global clip couples every parameter to the float32 ones through its factor
    single = {torch.float32, torch.complex64}
    coupled = case.clip and any(r.compute_dtype in single for r in recipes)
    for r, p, q in zip(recipes, flat_ours, flat_ref):
        tol = TOL[torch.float32 if coupled or r.compute_dtype in single else torch.float64]
        state, computed = opt.state[p], p
        if r.dtype in LOW and "master_param" in state:
            assert torch.equal(p.detach(), state["master_param"].to(r.dtype)), case
            computed = state["master_param"]
        else:
            assert (p.shape, p.stride()) == (q.shape, q.stride()), case
        worst = rel_diff(computed, q)
        assert worst <= tol, f"{case}: param {r.layout} {r.dtype}: {worst:.3e}"
        for key, value in ref.state[q].items():
            if key != "step" and isinstance(value, torch.Tensor) and value.numel() > 1:
                worst = rel_diff(state[key], value)
                assert worst <= 10 * tol, f"{case}: state {key}: {worst:.3e}"


def workers() -> int:
    """Processes for the CPU cases: one a core, at most 2 (CI's 2 cores; the cases are
    independent), 1 (this process) where fork is missing; ``ADAMLAB_TEST_WORKERS=1`` runs
    them here on a busy machine."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return 1
    wanted = os.environ.get("ADAMLAB_TEST_WORKERS")
    cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
             else os.cpu_count() or 1)
    return int(wanted) if wanted else min(2, cores)


def check_seed(seed: int) -> None:
    """``check(Case(seed))`` in a worker: a failure comes back with its seed and traceback
    (a pool keeps only the message)."""
    try:
        check(Case(seed))
    except Exception as error:
        raise AssertionError(f"seed {seed}: {type(error).__name__}: {error}\n"
                             f"{traceback.format_exc()}") from None


@pytest.fixture(scope="module")
def pool():
    """Forked workers, one thread each, shared by this module's CPU tests (torch's lazy
    imports done before the fork, so no worker pays them)."""
    n = workers()
    if n < 2:
        yield None
        return
    torch.optim.SGD([torch.zeros(1, requires_grad=True)])
    processes = multiprocessing.get_context("fork").Pool(n, initializer=torch.set_num_threads,
                                                         initargs=(1,))
    try:
        yield processes
    finally:
        processes.terminate()  # nothing is left running after a failure or a timeout
        processes.join()


def check_seeds(seeds: range, pool) -> None:
    """Every seed's case, in the pool's workers where there is one."""
    if pool is None:
        for seed in seeds:
            check_seed(seed)
    else:
        for _ in pool.imap_unordered(check_seed, seeds):
            pass


@pytest.mark.parametrize("first", range(0, 500, CASES_PER_TEST))
def test_presets_equal_torch_on_generated_cases(first, pool, one_thread):
    check_seeds(range(first, first + CASES_PER_TEST), pool)


@pytest.mark.slow
@pytest.mark.parametrize("first", range(500, 2500, CASES_PER_TEST))
def test_presets_equal_torch_on_more_generated_cases(first, pool, one_thread):
    check_seeds(range(first, first + CASES_PER_TEST), pool)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device "
                    "(scripts/gpu_check.sh runs it where there is one)")
@pytest.mark.parametrize("first", range(0, 200, CASES_PER_TEST))
def test_presets_equal_torch_on_generated_cases_on_cuda(first):
    """On CUDA: torch's fused kernels under our lowering, the multi-tensor chain, against
    torch's CUDA foreach step."""
    for seed in range(first, first + CASES_PER_TEST):
        check(Case(seed, device="cuda"))


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device "
                          "(scripts/gpu_check.sh runs it where there is one)")


@pytest.mark.parametrize("device", [pytest.param("cpu", marks=pytest.mark.slow),
                                    pytest.param("cuda", marks=CUDA)])
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("name", ["adabelief", "yogi"])
def test_compiled_steps_equal_the_chain_on_generated_cases(name, seed, device):
    """compiled=True (one graph per layout, minutes of compiling on CPU: slow) against the
    eager chain, in generated layouts and dtypes."""
    case = Case(seed, device=device)
    recipes = [r for ps, _ in case.groups for r in ps if r.dtype not in LOW]
    if not recipes:
        pytest.skip("no float parameter in this case")
    fast, slow = [r.make() for r in recipes], [r.make() for r in recipes]
    opt = optim.create(name, fast, lr=1e-2, compiled=True)
    ref = optim.create(name, slow, lr=1e-2)
    gradients = Gradients(recipes, [(fast, False), (slow, False)])
    for step in range(50):
        gradients(step, [r.active(step) for r in recipes])
        opt.step()
        ref.step()
    for r, p, q in zip(recipes, fast, slow):
        tol = TOL[torch.float64 if r.compute_dtype in (torch.float64, torch.complex128)
                  else torch.float32]
        assert rel_diff(p, q) <= 10 * tol, case
