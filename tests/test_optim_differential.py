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

The gradient is g = a (p - target) + noise (noise only for 16-bit parameters, whose
rounding would feed back). torch runs its multi-tensor (foreach) step, the path adamlab's
transforms follow op for op; the fused lowering is an ulp per step away from it (as
torch's fused kernel is from torch's own foreach step), well inside the tolerances
(relative 1e-6 in float32, 1e-10 in float64).
"""

from __future__ import annotations

import copy
import io
import math
import random

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
        self.target = torch.randn(self.shape, generator=gen, dtype=real)
        self.noise = 0.1 * torch.randn((STEPS, *self.shape), generator=gen, dtype=real)
        self.skip = (torch.rand(STEPS, generator=gen) < self.missing).tolist()
        if self.dtype in LOW:
            self.low_noise = self.noise.to(self.dtype).float()

    @property
    def compute_dtype(self):
        return torch.float32 if self.dtype in LOW else self.dtype

    def to(self, device: str) -> Param:
        """The same recipe with its tensors on ``device``."""
        for key in ("a", "target", "noise", "low_noise"):
            if hasattr(self, key):
                setattr(self, key, getattr(self, key).to(device))
        self.device = device
        return self

    def make(self, master: bool = False) -> torch.Tensor:
        """The parameter (``master``: torch's float32 stand-in for a 16-bit one)."""
        gen = torch.Generator().manual_seed(self.seed + 1)
        dtype, device = self.compute_dtype, getattr(self, "device", "cpu")
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

    def layout_of(self, p: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """The gradient ``g`` of ``p`` in this recipe's gradient layout."""
        if self.grad_layout == "contiguous":
            return g.contiguous()
        if self.grad_layout == "transposed" and g.ndim == 2:
            return g.t().contiguous().t()
        return torch.empty_like(p).copy_(g)


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


def gradients(recipes, params, step, master, active) -> list:
    """Each parameter's gradient (None where it has none this step): the smooth part in
    three multi-tensor ops, then each gradient in its layout."""
    smooth = [i for i, r in enumerate(recipes) if active[i] and r.dtype not in LOW]
    out = [None] * len(recipes)
    if smooth:
        diffs = torch._foreach_sub([params[i].detach() for i in smooth],
                                   [recipes[i].target for i in smooth])
        torch._foreach_mul_(diffs, [recipes[i].a for i in smooth])
        torch._foreach_add_(diffs, [recipes[i].noise[step] for i in smooth])
        for i, d in zip(smooth, diffs):
            out[i] = d
    for i, r in enumerate(recipes):
        if active[i]:
            out[i] = r.layout_of(params[i], out[i] if out[i] is not None else
                                 r.low_noise[step] if master else r.noise[step].to(r.dtype))
    return out


def run(case: Case):
    ours_p = [[r.make() for r in ps] for ps, _ in case.groups]
    ref_p = [[r.make(master=True) for r in ps] for ps, _ in case.groups]
    recipes = [r for ps, _ in case.groups for r in ps]
    flat_ours = [p for ps in ours_p for p in ps]
    flat_ref = [p for ps in ref_p for p in ps]
    opt, ref = case.ours(ours_p), case.reference(ref_p)
    for step in range(STEPS):
        active = [r.active(step) for r in recipes]
        for params, master in ((flat_ours, False), (flat_ref, True)):
            grads = gradients(recipes, params, step, master, active)
            for p, g in zip(params, grads):
                p.grad = g
        poisoned = [p for p in flat_ours if p.grad is not None and p.numel()]
        if step == case.nan_step and poisoned:
            poisoned[0].grad = poisoned[0].grad.clone().fill_(float("nan"))
        else:
            if case.clip:
                torch.nn.utils.clip_grad_norm_([q for q in flat_ref if q.grad is not None],
                                               case.clip)
            ref.step()
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


@pytest.mark.parametrize("first", range(0, 500, CASES_PER_TEST))
def test_presets_equal_torch_on_generated_cases(first, one_thread):
    for seed in range(first, first + CASES_PER_TEST):
        check(Case(seed))


@pytest.mark.slow
@pytest.mark.parametrize("first", range(500, 2500, CASES_PER_TEST))
def test_presets_equal_torch_on_more_generated_cases(first, one_thread):
    for seed in range(first, first + CASES_PER_TEST):
        check(Case(seed))


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
    for step in range(50):
        active = [r.active(step) for r in recipes]
        for params, o in ((fast, opt), (slow, ref)):
            for p, g in zip(params, gradients(recipes, params, step, False, active)):
                p.grad = g
            o.step()
    for r, p, q in zip(recipes, fast, slow):
        tol = TOL[torch.float64 if r.compute_dtype in (torch.float64, torch.complex128)
                  else torch.float32]
        assert rel_diff(p, q) <= 10 * tol, case
