"""Chains that equal a torch algorithm give torch's numbers (500 steps, several groups)."""

import pytest
import torch

import optim

STEPS = 500
TOL = {torch.float32: 1e-6, torch.float64: 1e-12}


def make_problem(dtype, seed=0):
    """A small MLP regression with two param groups and a fresh minibatch each step."""
    g = torch.Generator().manual_seed(seed)
    layers = [
        torch.randn(16, 8, generator=g, dtype=dtype) * 0.3,
        torch.randn(16, generator=g, dtype=dtype) * 0.1,
        torch.randn(3, 16, generator=g, dtype=dtype) * 0.3,
        torch.randn(3, generator=g, dtype=dtype) * 0.1,
    ]
    data = [(torch.randn(32, 8, generator=g, dtype=dtype),
             torch.randn(32, 3, generator=g, dtype=dtype)) for _ in range(50)]
    return layers, data


def loss_fn(params, x, y):
    w1, b1, w2, b2 = params
    return ((torch.tanh(x @ w1.T + b1) @ w2.T + b2 - y) ** 2).mean()


def train(make_opt, dtype, group_hparams):
    init, data = make_problem(dtype)
    params = [p.clone().requires_grad_() for p in init]
    groups = [{"params": params[:2], **group_hparams[0]},
              {"params": params[2:], **group_hparams[1]}]
    opt = make_opt(groups)
    for step in range(STEPS):
        x, y = data[step % len(data)]
        opt.zero_grad()
        loss_fn(params, x, y).backward()
        opt.step()
    return params, opt


def rel_diff(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


# name: (our preset, torch class, shared kwargs, per-group overrides)
CASES = {
    "adam": ("adam", torch.optim.Adam, {"lr": 1e-2}, [{}, {"lr": 3e-3}]),
    "adamw": ("adamw", torch.optim.AdamW, {"lr": 1e-2, "weight_decay": 0.1},
              [{}, {"weight_decay": 0.01, "betas": (0.8, 0.99)}]),
    "adam_amsgrad": ("adam", torch.optim.Adam, {"lr": 1e-2, "amsgrad": True},
                     [{}, {"lr": 3e-3}]),
    "adamw_amsgrad": ("adamw", torch.optim.AdamW, {"lr": 1e-2, "amsgrad": True,
                                                   "weight_decay": 0.05}, [{}, {"eps": 1e-6}]),
    "adam_l2": ("adam_l2", torch.optim.Adam, {"lr": 1e-2, "weight_decay": 0.1},
                [{}, {"weight_decay": 0.0}]),
    "nadam": ("nadam", torch.optim.NAdam, {"lr": 2e-3}, [{}, {"betas": (0.85, 0.99)}]),
    "radam": ("radam", torch.optim.RAdam, {"lr": 1e-2}, [{}, {"lr": 3e-3}]),
    "adamax": ("adamax", torch.optim.Adamax, {"lr": 2e-3}, [{}, {"weight_decay": 0.01}]),
    "sgd_momentum": ("sgd", torch.optim.SGD, {"lr": 0.05, "momentum": 0.9},
                     [{}, {"lr": 0.01}]),
    "sgd_nesterov": ("sgd", torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": True,
                                              "weight_decay": 1e-3}, [{}, {}]),
    "sgd_dampening": ("sgd", torch.optim.SGD, {"lr": 0.05, "momentum": 0.9,
                                               "dampening": 0.5}, [{}, {"momentum": 0.5}]),
    "rmsprop": ("rmsprop", torch.optim.RMSprop, {"lr": 1e-3}, [{}, {"alpha": 0.9}]),
    "rmsprop_centered": ("rmsprop", torch.optim.RMSprop, {"lr": 1e-3, "centered": True,
                                                          "momentum": 0.5}, [{}, {}]),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("fused", [None, False], ids=["auto", "unfused"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_chain_equals_torch(case, fused, dtype):
    """Each path against torch's same path: the fused lowering against torch's fused kernel,
    the chain run transform by transform against torch's multi-tensor (foreach) step.
    (torch's CPU fused Adam computes p + (-step_size * m) / denom, its foreach and for-loop
    steps p + -step_size * (m / denom): an ulp apart per step, which 500 steps of this
    small tanh net grow to 1.3e-6 for adam_l2 in float32. The differential test checks every
    path against torch's default step on problems that do not amplify rounding.)"""
    name, torch_cls, kwargs, overrides = CASES[case]
    ours, opt = train(lambda g: optim.create(name, g, fused=fused, **kwargs), dtype, overrides)
    path = {"fused": True} if opt._plan is not None else {"foreach": True}
    ref, ref_opt = train(lambda g: torch_cls(g, **kwargs, **path), dtype, overrides)
    worst = max(rel_diff(a, b) for a, b in zip(ours, ref))
    assert worst <= TOL[dtype], f"{case}: max relative difference {worst:.3e}"
    # the moment estimates agree too, not only the parameters
    for p, q in zip(ours, ref):
        for key, value in ref_opt.state[q].items():
            if key in opt.state[p] and key != "step" and value.numel() > 1:
                assert rel_diff(opt.state[p][key], value) <= 10 * TOL[dtype], key


def test_lowering_is_used_where_a_fused_kernel_exists():
    p = [torch.zeros(3, requires_grad=True)]
    assert optim.create("adamw", p)._plan.kind == "adamw"
    assert optim.create("adam", p, clip=1.0)._plan.kind == "adam"
    assert optim.create("sgd", p, momentum=0.9)._plan.kind == "sgd"
    assert optim.create("adam", p, clip=1.0, clip_at="update")._plan.update_clip
    assert optim.create("adamw", p, clip=1.0, clip_at="update")._plan is None
    assert optim.create("nadam", p)._plan is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_fused_clip_matches_unfused_clip(dtype):
    """clip_by_global_norm lowered to the kernel's grad_scale equals the explicit chain, and
    both equal torch's clip_grad_norm_ over all parameters (both groups) followed by torch's
    AdamW."""
    kwargs = {"lr": 1e-2, "weight_decay": 0.01}
    fast, opt = train(lambda g: optim.create("adamw", g, clip=0.05, **kwargs), dtype, [{}, {}])
    slow, _ = train(lambda g: optim.create("adamw", g, clip=0.05, fused=False, **kwargs), dtype,
                    [{}, {}])
    assert max(rel_diff(a, b) for a, b in zip(fast, slow)) <= TOL[dtype]
    assert opt.stats[0].clipped > 0.5 * STEPS  # the threshold really bites

    init, data = make_problem(dtype)
    params = [p.clone().requires_grad_() for p in init]
    ref = torch.optim.AdamW([{"params": params[:2]}, {"params": params[2:]}], **kwargs)
    for step in range(STEPS):
        ref.zero_grad()
        loss_fn(params, *data[step % len(data)]).backward()
        torch.nn.utils.clip_grad_norm_(params, 0.05)
        ref.step()
    assert max(rel_diff(a, b) for a, b in zip(slow, params)) <= TOL[dtype]


@pytest.mark.parametrize("amsgrad", [False, True], ids=["adam", "amsgrad"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_update_clip_lowered_matches_chain_and_written_out_rule(dtype, amsgrad):
    """Adam + clip_update_norm on the fused kernel (scratch update) equals the chain run
    transform by transform, and both equal the rule written out: the update
    m_hat / (sqrt(v_hat) + eps) of both groups scaled to global norm <= max_norm, then
    times lr."""
    kwargs = {"lr": 1e-2, "clip": 3.0, "clip_at": "update", "amsgrad": amsgrad}
    fast, opt = train(lambda g: optim.create("adam", g, **kwargs), dtype, [{}, {}])
    slow, _ = train(lambda g: optim.create("adam", g, fused=False, **kwargs), dtype, [{}, {}])
    assert opt._plan.update_clip
    assert max(rel_diff(a, b) for a, b in zip(fast, slow)) <= TOL[dtype]
    assert 0.05 * STEPS < opt.stats[0].clipped < 0.95 * STEPS  # clipped on some steps only

    init, data = make_problem(dtype)
    params = [p.clone().requires_grad_() for p in init]
    m, v, vmax = ([torch.zeros_like(p) for p in params] for _ in range(3))
    b1, b2, eps = 0.9, 0.999, 1e-8
    for step in range(1, STEPS + 1):
        grads = torch.autograd.grad(loss_fn(params, *data[(step - 1) % len(data)]), params)
        with torch.no_grad():
            updates = []
            for i in range(4):
                m[i] = b1 * m[i] + (1 - b1) * grads[i]
                v[i] = b2 * v[i] + (1 - b2) * grads[i] ** 2
                vmax[i] = torch.maximum(vmax[i], v[i])
                v_hat = (vmax[i] if amsgrad else v[i]) / (1 - b2**step)
                updates.append(m[i] / (1 - b1**step) / (v_hat.sqrt() + eps))
            norm = torch.sqrt(sum((u**2).sum() for u in updates))
            scale = min(1.0, 3.0 / (norm.item() + 1e-6))
            for i, u in enumerate(updates):
                params[i] -= 1e-2 * scale * u
    assert max(rel_diff(a, b) for a, b in zip(fast, params)) <= 10 * TOL[dtype]


@pytest.mark.parametrize("name,kwargs", [("adabelief", {"weight_decay": 0.1}), ("yogi", {})],
                         ids=["adabelief", "yogi"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_compiled_step_matches_the_chain(dtype, name, kwargs):
    """compiled=True (one torch.compile'd step) equals the transform-by-transform chain,
    which the tests below check against the papers' rules; same state, so a state_dict
    moves between the two."""
    kwargs = {"lr": 1e-2, **kwargs}
    fast, opt = train(lambda g: optim.create(name, g, compiled=True, **kwargs), dtype,
                      [{}, {"lr": 3e-3}])
    slow, eager = train(lambda g: optim.create(name, g, **kwargs), dtype, [{}, {"lr": 3e-3}])
    assert type(opt._plan).__name__ == "CompiledSegment"
    assert max(rel_diff(a, b) for a, b in zip(fast, slow)) <= TOL[dtype]
    assert opt.state_dict()["state"].keys() == eager.state_dict()["state"].keys()
    for p, q in zip(fast, slow):
        assert opt.state[p].keys() == eager.state[q].keys()


def test_compiled_step_recompiles_for_a_new_layout():
    """The compiled graphs skip dynamo's guards; the layout check must catch a gradient
    that arrives with other strides (here transposed) and still give the chain's result."""
    torch.manual_seed(0)
    init = [torch.randn(6, 4), torch.randn(5)]
    fast = [p.clone().requires_grad_() for p in init]
    slow = [p.clone().requires_grad_() for p in init]
    opt_fast = optim.create("adabelief", fast, compiled=True)
    opt_slow = optim.create("adabelief", slow)
    for step in range(6):
        grads = [torch.randn(4, 6).t() if step % 2 else torch.randn(6, 4), torch.randn(5)]
        for p, q, g in zip(fast, slow, grads):
            p.grad, q.grad = g.clone() if step % 2 == 0 else g, g.clone()
        assert fast[0].grad.is_contiguous() == (step % 2 == 0)
        opt_fast.step()
        opt_slow.step()
    assert max(rel_diff(a, b) for a, b in zip(fast, slow)) <= 1e-6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device "
                    "(scripts/gpu_check.sh runs it where there is one)")
@pytest.mark.parametrize("name,kwargs", [
    ("adamw", {"weight_decay": 0.1}), ("adam", {"clip": 3.0, "clip_at": "update"}),
    ("adabelief", {"compiled": True}), ("yogi", {"compiled": True})])
def test_cuda_fast_paths_match_the_chain(name, kwargs):
    """On CUDA: the fused lowerings and the compiled steps against the eager chain."""
    torch.manual_seed(0)
    init = [torch.randn(64, 32, device="cuda"), torch.randn(32, device="cuda")]
    fast = [p.clone().requires_grad_() for p in init]
    slow = [p.clone().requires_grad_() for p in init]
    opt = optim.create(name, fast, lr=1e-2, **kwargs)
    ref = optim.create(name, slow, lr=1e-2, fused=False,
                       **{k: v for k, v in kwargs.items() if k != "compiled"})
    assert opt._plan is not None
    for _ in range(50):
        grads = [torch.randn_like(p) for p in init]
        for p, q, g in zip(fast, slow, grads):
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        ref.step()
    assert max(rel_diff(a, b) for a, b in zip(fast, slow)) <= 1e-5


def test_compiled_is_refused_where_it_does_not_apply():
    p = [torch.zeros(3, requires_grad=True)]
    assert optim.create("adam", p, compiled=True)._plan.kind == "adam"  # fused stays
    with pytest.raises(ValueError, match="compiled=True is invalid"):
        optim.create("nadam", p, compiled=True)


# --- AdaBelief and Yogi against the papers' rules, written out one tensor at a time ---


def adabelief_reference(p, grads, lr, b1, b2, eps):
    """Zhuang et al. (2020), Algorithm 2."""
    m, s = torch.zeros_like(p), torch.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        s = b2 * s + (1 - b2) * (g - m) ** 2 + eps
        m_hat, s_hat = m / (1 - b1**t), s / (1 - b2**t)
        p = p - lr * m_hat / (s_hat.sqrt() + eps)
    return p


def yogi_reference(p, grads, lr, b1, b2, eps, v0):
    """Zaheer et al. (2018), Algorithm 2, with Adam's bias correction."""
    m, v = torch.zeros_like(p), torch.full_like(p, v0)
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = v - (1 - b2) * torch.sign(v - g**2) * g**2
        p = p - lr * (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + eps)
    return p


@pytest.mark.parametrize("name", ["adabelief", "yogi"])
def test_adabelief_and_yogi_follow_the_papers(name):
    gen = torch.Generator().manual_seed(1)
    p0 = torch.randn(40, dtype=torch.float64, generator=gen)
    grads = [torch.randn(40, dtype=torch.float64, generator=gen) * (1 + 5 * (i % 7 == 0))
             for i in range(300)]
    p = p0.clone().requires_grad_()
    hp = {"lr": 1e-2, "betas": (0.9, 0.99), "eps": 1e-3 if name == "yogi" else 1e-12}
    opt = optim.create(name, [p], **hp)
    for g in grads:
        p.grad = g.clone()
        opt.step()
    if name == "adabelief":
        expected = adabelief_reference(p0, grads, hp["lr"], *hp["betas"], hp["eps"])
    else:
        expected = yogi_reference(p0, grads, hp["lr"], *hp["betas"], hp["eps"], 1e-6)
    assert rel_diff(p.detach(), expected) <= 1e-12


def test_strided_gradients_take_the_exact_path():
    """torch's CPU fused kernels mis-handle non-contiguous gradients: such steps must not be
    lowered (found by the ridge study, where grads were views of an einsum output)."""
    gen = torch.Generator().manual_seed(0)
    grads = torch.randn(2, 4, 5, generator=gen, dtype=torch.float64).transpose(1, 2)
    ours = [torch.zeros(5, 4, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    ref = [p.detach().clone().requires_grad_() for p in ours]
    opt, ref_opt = optim.create("adam", ours, lr=0.1), torch.optim.Adam(ref, lr=0.1)
    for _ in range(5):
        for i in range(2):
            ours[i].grad, ref[i].grad = grads[i], grads[i].contiguous()
        assert not ours[0].grad.is_contiguous()
        opt.step()
        ref_opt.step()
    assert max(rel_diff(a, b) for a, b in zip(ours, ref)) <= 1e-12
