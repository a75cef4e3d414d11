"""Median optimizer step time: each preset against torch's fastest path for the same algorithm.

    python bench/optim_step.py [--device cuda] [--repeats 5] [--steps 20]
    python bench/optim_step.py --baseline /path/to/other/checkout   # ours vs another optim

Shapes: (a) 500 tensors of 128x128 and (b) 4 tensors of 2048x1024, float32 (``--shapes
4x3x4``: 4 tensors of 3x4, where the per-step overhead shows). The
``:compiled`` cases compile on their first step (minutes for 500 tensors the first time;
inductor caches the result on disk). For each
case the two optimizers are timed in alternation, `repeats` times, and the ratio of
medians is printed (ours / torch). Torch's best path: fused where torch has it (Adam,
AdamW, SGD), foreach otherwise.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import torch

import optim

SHAPES = {"500x128x128": [(128, 128)] * 500, "4x2048x1024": [(2048, 1024)] * 4,
          "4x3x4": [(3, 4)] * 4}  # a small model's step: the per-step overhead (--shapes)
DEFAULT_SHAPES = ["500x128x128", "4x2048x1024"]


def _torch(cls, **kw):
    return lambda ps, fused: cls(ps, **kw, **({"fused": True} if fused else {"foreach": True}))


class ExtraPassBound:
    """The update-clip chain's own bound: torch's fused Adam plus the passes a global-norm
    clip of the update cannot avoid (write the update, read it for its norm, add it to the
    parameters)."""

    def __init__(self, params, fused: bool):
        self.adam = torch.optim.Adam(params, fused=fused, foreach=not fused)
        self.params, self.update = params, [torch.empty_like(p) for p in params]

    @torch.no_grad()
    def step(self):
        self.adam.step()
        torch._foreach_copy_(self.update, [p.grad for p in self.params])
        torch._foreach_norm(self.update)
        torch._foreach_add_(self.params, self.update, alpha=-1e-12)


# name: (our factory, torch factory, torch has a fused kernel for it)
CASES = {
    "adam": (lambda ps: optim.create("adam", ps), _torch(torch.optim.Adam), True),
    "adamw": (lambda ps: optim.create("adamw", ps), _torch(torch.optim.AdamW), True),
    "amsgrad": (lambda ps: optim.create("amsgrad", ps), _torch(torch.optim.Adam, amsgrad=True),
                True),
    "sgd": (lambda ps: optim.create("sgd", ps, momentum=0.9),
            _torch(torch.optim.SGD, lr=1e-2, momentum=0.9), True),
    "nadam": (lambda ps: optim.create("nadam", ps), _torch(torch.optim.NAdam), False),
    "radam": (lambda ps: optim.create("radam", ps), _torch(torch.optim.RAdam), False),
    "adamax": (lambda ps: optim.create("adamax", ps), _torch(torch.optim.Adamax), False),
    "rmsprop": (lambda ps: optim.create("rmsprop", ps), _torch(torch.optim.RMSprop), False),
    "nadamw": (lambda ps: optim.create("nadamw", ps),
               _torch(torch.optim.NAdam, weight_decay=1e-2, decoupled_weight_decay=True), False),
    "radamw": (lambda ps: optim.create("radamw", ps),
               _torch(torch.optim.RAdam, weight_decay=1e-2, decoupled_weight_decay=True), False),
    # no torch peer: against torch's Adam (nearest in passes)
    "adopt": (lambda ps: optim.create("adopt", ps), _torch(torch.optim.Adam), False),
    "lion": (lambda ps: optim.create("lion", ps), _torch(torch.optim.Adam), False),
    "adabelief": (lambda ps: optim.create("adabelief", ps), _torch(torch.optim.Adam), False),
    "yogi": (lambda ps: optim.create("yogi", ps), _torch(torch.optim.Adam), False),
    # compiled=True (optim.compiled) against torch's fused Adam; the first step compiles
    "adabelief:compiled": (lambda ps: optim.create("adabelief", ps, compiled=True),
                           _torch(torch.optim.Adam), True),
    "yogi:compiled": (lambda ps: optim.create("yogi", ps, compiled=True),
                      _torch(torch.optim.Adam), True),
    # clipped chains against torch's own clip_grad_norm_ + the same algorithm
    "adamw+clip(grad)": (lambda ps: optim.create("adamw", ps, clip=1.0),
                         _torch(torch.optim.AdamW), True),
    "adam+clip(update)": (lambda ps: optim.create("adam", ps, clip=1.0, clip_at="update"),
                          _torch(torch.optim.Adam), False),
    "adam+clip(update)/bound": (lambda ps: optim.create("adam", ps, clip=1.0, clip_at="update"),
                                ExtraPassBound, True),
}
CLIPPED_REFERENCE = {"adamw+clip(grad)", "adam+clip(update)"}
# --baseline: the same preset from another checkout's optim package (a regression check)
BASELINE_CASES = {"adam": ("adam", {}), "adamw": ("adamw", {}), "amsgrad": ("amsgrad", {}),
                  "sgd": ("sgd", {"momentum": 0.9}), "nadam": ("nadam", {}),
                  "rmsprop": ("rmsprop", {}), "adamw+clip(grad)": ("adamw", {"clip": 1.0}),
                  "adam+clip(update)": ("adam", {"clip": 1.0, "clip_at": "update"})}


def _baseline_optim(checkout: str):
    """``checkout``/optim imported as the package ``optim_baseline``."""
    root = Path(checkout) / "optim"
    spec = importlib.util.spec_from_file_location(
        "optim_baseline", root / "__init__.py", submodule_search_locations=[str(root)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["optim_baseline"] = module
    spec.loader.exec_module(module)
    return module


def _against_baseline(baseline, name: str):
    preset, kwargs = BASELINE_CASES[name]
    return (lambda ps: optim.create(preset, ps, **kwargs),
            lambda ps, fused: baseline.create(preset, ps, **kwargs), False)


def _params(shapes, device):
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=gen).to(device).requires_grad_() for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen).to(device) * 1e-2
    return params


def _time(opt, params, steps, clip_first, device) -> float:
    """Median seconds per step."""
    times = []
    for _ in range(steps):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        if clip_first:
            torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench(shape_name, name, repeats, steps, device, case=None):
    ours_factory, torch_factory, fused = case or CASES[name]
    ours_p, ref_p = _params(SHAPES[shape_name], device), _params(SHAPES[shape_name], device)
    ours, ref = ours_factory(ours_p), torch_factory(ref_p, fused and device in ("cpu", "cuda"))
    for opt, ps in ((ours, ours_p), (ref, ref_p)):  # warm up, allocate state
        _time(opt, ps, 3, False, device)
    ours_t, ref_t = [], []
    for _ in range(repeats):
        ours_t.append(_time(ours, ours_p, steps, False, device))
        ref_t.append(_time(ref, ref_p, steps, case is None and name in CLIPPED_REFERENCE,
                           device))
    return statistics.median(ours_t), statistics.median(ref_t), "fused" if fused else "foreach"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--cases", nargs="*", default=None)
    parser.add_argument("--shapes", nargs="*", choices=list(SHAPES), default=DEFAULT_SHAPES)
    parser.add_argument("--baseline", help="a checkout whose optim/ to time ours against "
                        f"(cases: {', '.join(BASELINE_CASES)})")
    args = parser.parse_args()
    if args.baseline:
        baseline = _baseline_optim(args.baseline)
        return _print_baseline(args, baseline, args.cases or list(BASELINE_CASES))
    args.cases = args.cases or list(CASES)
    print(f"device={args.device} torch={torch.__version__} threads={torch.get_num_threads()}")
    print(f"{'shape':<13} {'preset':<18} {'ours ms':>8} {'torch ms':>9} {'torch path':<11} "
          f"{'ratio':>6}")
    for shape_name in args.shapes:
        for name in args.cases:
            ours, ref, path = bench(shape_name, name, args.repeats, args.steps, args.device)
            if name in CLIPPED_REFERENCE:
                path = "clip+" + path
            if CASES[name][1] is ExtraPassBound:
                path = "fused+3pass"
            print(f"{shape_name:<13} {name:<18} {ours * 1e3:8.2f} {ref * 1e3:9.2f} {path:<11} "
                  f"{ours / ref:6.2f}", flush=True)


def _print_baseline(args, baseline, cases) -> None:
    print(f"device={args.device} baseline={args.baseline} threads={torch.get_num_threads()}")
    print(f"{'shape':<13} {'preset':<18} {'ours ms':>8} {'base ms':>8} {'ratio':>6}")
    for shape_name in args.shapes:
        for name in cases:
            ours, ref, _ = bench(shape_name, name, args.repeats, args.steps, args.device,
                                 case=_against_baseline(baseline, name))
            print(f"{shape_name:<13} {name:<18} {ours * 1e3:8.2f} {ref * 1e3:8.2f} "
                  f"{ours / ref:6.2f}", flush=True)


if __name__ == "__main__":
    main()
