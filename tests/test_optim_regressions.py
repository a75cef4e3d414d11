"""One test per silent error of issue 11 (each failed on main at 038be65): layouts, complex
parameters, clipping scope, bf16 decay, group keys, torch state_dicts, update clipping and
its telemetry, chains that cannot step, sparse gradients."""

import copy
import io

import pytest
import torch

import optim

f64 = torch.float64


def rel(a, b) -> float:
    a, b = a.detach(), b.detach()
    if a.is_complex():
        a, b = torch.view_as_real(a), torch.view_as_real(b)
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def run_pair(ours, ref, params, refs, grads):
    for gs in grads:
        for p, q, g in zip(params, refs, gs):
            p.grad, q.grad = g.clone(), g.clone()
        ours.step()
        ref.step()


LAYOUTS = {
    "transposed": lambda: torch.randn(4, 6).t(),
    "column_slice": lambda: torch.randn(6, 8)[:, ::2],
    "channels_last": lambda: torch.randn(2, 3, 4, 5).to(memory_format=torch.channels_last),
}


@pytest.mark.parametrize("name,cls", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW),
                                      ("sgd", torch.optim.SGD)])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_non_contiguous_parameters_get_torchs_update(layout, name, cls):
    """The fused lowering checked only the gradient's layout: on a transposed parameter 5
    steps of Adam (lr 0.1, contiguous gradients) differed from torch by 0.89."""
    torch.manual_seed(0)
    p = LAYOUTS[layout]().requires_grad_()
    torch.manual_seed(0)
    q = LAYOUTS[layout]().requires_grad_()
    assert not p.is_contiguous() and q.stride() == p.stride() and torch.equal(p, q)
    kwargs = {"lr": 0.1, "momentum": 0.9} if name == "sgd" else {"lr": 0.1}
    grads = [[torch.randn(p.shape)] for _ in range(5)]  # contiguous gradients
    run_pair(optim.create(name, [p], **kwargs), cls([q], **kwargs, foreach=False), [p], [q],
             grads)
    assert rel(p, q) <= 1e-6


@pytest.mark.parametrize("name,cls", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW),
                                      ("rmsprop", torch.optim.RMSprop),
                                      ("adamax", torch.optim.Adamax)])
def test_complex_parameters_are_viewed_as_real(name, cls):
    """Adam/AdamW/RMSprop squared g instead of |g|^2 (torch views complex as real): after 20
    steps 0.09 (Adam) and 0.75 (RMSprop) off."""
    torch.manual_seed(0)
    p = torch.randn(5, 3, dtype=torch.complex128, requires_grad=True)
    q = p.detach().clone().requires_grad_()
    grads = [[torch.randn(5, 3, dtype=torch.complex128)] for _ in range(20)]
    run_pair(optim.create(name, [p], lr=0.05), cls([q], lr=0.05), [p], [q], grads)
    assert rel(p, q) <= 1e-12


@pytest.mark.parametrize("name,cls", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)])
@pytest.mark.parametrize("fused", [None, False], ids=["auto", "unfused"])
def test_global_clipping_spans_param_groups(fused, name, cls):
    """clip=1 with the usual decay / no-decay split: the step norm was 1.41 (each group
    clipped to 1), not what clip_grad_norm_(model.parameters()) gives."""
    torch.manual_seed(0)
    init = [torch.randn(8, 4), torch.randn(8), torch.randn(3, 8), torch.randn(3)]
    ours = [t.clone().requires_grad_() for t in init]
    refs = [t.clone().requires_grad_() for t in init]
    opt = optim.create(name, [{"params": ours[::2]}, {"params": ours[1::2], "weight_decay": 0.0}],
                       lr=1e-2, clip=1.0, fused=fused)
    ref = cls([{"params": refs[::2]}, {"params": refs[1::2], "weight_decay": 0.0}], lr=1e-2)
    for _ in range(30):
        grads = [torch.randn(t.shape) * 3 for t in init]
        for p, q, g in zip(ours, refs, grads):
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        torch.nn.utils.clip_grad_norm_(refs, 1.0)
        ref.step()
    assert max(rel(p, q) for p, q in zip(ours, refs)) <= 1e-6
    assert [s["clip_fraction"] for s in optim.telemetry(opt)] == [1.0, 1.0]


def test_update_norm_is_bounded_over_all_groups():
    torch.manual_seed(0)
    ps = [torch.zeros(10, dtype=f64, requires_grad=True) for _ in range(2)]
    opt = optim.create("adam", [{"params": [ps[0]]}, {"params": [ps[1]]}], lr=1.0, clip=1.0,
                       clip_at="update")
    for p in ps:
        p.grad = torch.randn(10, dtype=f64)
    opt.step()
    step = torch.cat([p.detach() for p in ps]).norm().item()
    assert step == pytest.approx(1.0, rel=1e-6)  # was sqrt(2): one bound per group


def test_skip_nonfinite_skips_every_group_and_per_group_on_request():
    a, b = torch.zeros(3, requires_grad=True), torch.zeros(3, requires_grad=True)
    grads = [torch.ones(3), torch.tensor([1.0, float("nan"), 1.0])]
    for scope, moved in (("global", False), ("group", True)):
        opt = optim.chain([{"params": [a]}, {"params": [b]}],
                          optim.skip_nonfinite(scope=scope), optim.scale_by_adam(),
                          optim.scale_by_lr(), lr=0.1)
        a.grad, b.grad = grads[0].clone(), grads[1].clone()
        opt.step()
        assert bool(a.detach().abs().sum() > 0) == moved and b.detach().abs().sum() == 0
        assert [s["skipped_steps"] for s in optim.telemetry(opt)] == [int(not moved), 1]
        with torch.no_grad():
            a.zero_()


@pytest.mark.parametrize("fused", [None, False], ids=["auto", "unfused"])
def test_bf16_adamw_decay_is_not_rounded_away(fused):
    """Weights 1.0, zero gradient, lr = wd = 1e-2, 100 steps: bf16 weights stayed 1.0 (each
    step's decay is below half a bf16 ulp); float32 gives (1 - 1e-4)^100 = 0.990."""
    w = torch.ones(8, dtype=torch.bfloat16, requires_grad=True)
    opt = optim.create("adamw", [w], lr=1e-2, weight_decay=1e-2, fused=fused)
    for _ in range(100):
        w.grad = torch.zeros(8, dtype=torch.bfloat16)
        opt.step()
    assert (w.detach().float() - (1 - 1e-4) ** 100).abs().max() <= 2**-8


def test_group_hyperparameters_are_honoured_or_refused():
    """rmsprop with momentum in a group silently ran without momentum; a typo such as
    weight_dacay was accepted."""
    torch.manual_seed(0)
    p = torch.randn(6, dtype=f64, requires_grad=True)
    q = p.detach().clone().requires_grad_()
    grads = [[torch.randn(6, dtype=f64)] for _ in range(20)]
    run_pair(optim.create("rmsprop", [{"params": [p], "momentum": 0.9}], lr=1e-2),
             torch.optim.RMSprop([{"params": [q], "momentum": 0.9}], lr=1e-2), [p], [q], grads)
    assert rel(p, q) <= 1e-12
    with pytest.raises(ValueError, match=r"param_groups\[1\]: key 'weight_dacay'.*"
                                         r"did you mean 'weight_decay'"):
        optim.create("adamw", [{"params": [p]}, {"params": [q], "weight_dacay": 0.1}])
    with pytest.raises(ValueError, match=r"param_groups\[0\]: key 'momentum'"):
        optim.create("adam", [{"params": [p], "momentum": 0.9}])


@pytest.mark.parametrize("name,cls,kwargs", [
    ("adam", torch.optim.Adam, {"amsgrad": True}), ("adamw", torch.optim.AdamW, {}),
    ("sgd", torch.optim.SGD, {"momentum": 0.9, "nesterov": True}),
    ("rmsprop", torch.optim.RMSprop, {"momentum": 0.5, "centered": True}),
    ("nadam", torch.optim.NAdam, {}), ("nadamw", torch.optim.NAdam,
                                       {"decoupled_weight_decay": True, "weight_decay": 0.1}),
    ("radam", torch.optim.RAdam, {}), ("radamw", torch.optim.RAdam,
                                       {"decoupled_weight_decay": True, "weight_decay": 0.1}),
    ("adamax", torch.optim.Adamax, {}),
])
def test_torch_state_dict_loads_and_continues_as_torch(name, cls, kwargs):
    """A torch.optim.Adam state_dict could not be loaded into create('adam')
    (KeyError: 'nesterov'). Now: 20 steps of torch, its state_dict into a fresh adamlab
    optimizer, 20 more steps of each: equal."""
    torch.manual_seed(0)
    p = torch.randn(7, 3, dtype=f64, requires_grad=True)
    grads = [torch.randn(7, 3, dtype=f64) for _ in range(40)]
    ref = cls([p], lr=1e-2, **kwargs)
    for g in grads[:20]:
        p.grad = g.clone()
        ref.step()
    q = p.detach().clone().requires_grad_()
    ours = optim.create(name, [q], lr=1e-2, **{k: v for k, v in kwargs.items()
                                               if k != "decoupled_weight_decay"})
    buffer = io.BytesIO()
    torch.save(ref.state_dict(), buffer)
    buffer.seek(0)
    ours.load_state_dict(torch.load(buffer, weights_only=True))
    for g in grads[20:]:
        p.grad, q.grad = g.clone(), g.clone()
        ref.step()
        ours.step()
    assert rel(q, p) <= 1e-12


def test_torch_state_dict_with_other_semantics_is_refused():
    p = torch.zeros(3, requires_grad=True)
    ref = torch.optim.AdamW([p], weight_decay=0.1)
    p.grad = torch.ones(3)
    ref.step()
    with pytest.raises(ValueError, match="decoupled_weight_decay=True does not match"):
        optim.create("adam_l2", [p], weight_decay=0.1).load_state_dict(ref.state_dict())
    ref = torch.optim.Adam([p], maximize=True)
    with pytest.raises(ValueError, match="maximize=True is not supported"):
        optim.create("adam", [p]).load_state_dict(ref.state_dict())


def test_older_adamlab_state_dict_takes_defaults_for_missing_keys():
    """A transform that gains a hyperparameter (or a stats counter) must still load the
    checkpoints written before it had one."""
    torch.manual_seed(0)
    p = torch.randn(5, requires_grad=True)
    opt = optim.create("nadam", [p], lr=1e-2, skip_nonfinite=True)
    for _ in range(5):
        p.grad = torch.randn(5)
        opt.step()
    sd = copy.deepcopy(opt.state_dict())
    for group in sd["param_groups"]:
        del group["momentum_decay"], group["amsgrad"]
    for stats in sd["chain_stats"]:
        del stats["skipped_in_a_row"], stats["clipped_by"]
    del sd["chain_micro_steps"]
    fresh = optim.create("nadam", [p.detach().clone().requires_grad_()], lr=1e-2,
                         skip_nonfinite=True)
    fresh.load_state_dict(sd)
    assert fresh.param_groups[0]["momentum_decay"] == 4e-3
    assert fresh.stats[0].steps == 5


@pytest.mark.parametrize("fused", [None, False], ids=["auto", "unfused"])
def test_update_clipping_never_clips_the_decoupled_decay(fused):
    """AdamW with update clipping also clipped the decay (100x weaker in a zero-gradient
    test); with a zero gradient the weights must shrink by exactly (1 - lr wd) a step."""
    w = torch.full((50,), 2.0, dtype=f64, requires_grad=True)
    opt = optim.create("adamw", [w], lr=1e-2, weight_decay=0.1, clip=1e-3, clip_at="update",
                       fused=fused)
    for _ in range(100):
        w.grad = torch.zeros(50, dtype=f64)
        opt.step()
    assert torch.allclose(w.detach(), torch.full((50,), 2.0 * (1 - 1e-3) ** 100, dtype=f64),
                          rtol=1e-12)


def test_telemetry_names_what_it_measures():
    """With clip_at='update', grad_norm reported the update's norm; two clip transforms gave
    clip_fraction 2.0."""
    torch.manual_seed(0)
    p = torch.randn(20, dtype=f64, requires_grad=True)
    opt = optim.create("adam", [p], lr=1e-2, clip=0.5, clip_at="update")
    opt.record_updates = True
    g = torch.randn(20, dtype=f64) * 10
    p.grad = g.clone()
    opt.step()
    fig = optim.telemetry(opt)[0]
    assert fig["grad_norm"] == pytest.approx(g.norm().item())
    assert fig["update_norm"] == pytest.approx(20**0.5, rel=1e-3)  # |m_hat / sqrt(v_hat)| = 1
    assert fig["clipped_update_norm"] == pytest.approx(0.5, rel=1e-5)
    two = optim.chain([p], optim.clip_by_global_norm(1.0), optim.scale_by_adam(),
                      optim.clip_update_norm(0.5), optim.scale_by_lr(), lr=1e-2)
    for _ in range(3):
        p.grad = torch.randn(20, dtype=f64) * 10
        two.step()
    fig = optim.telemetry(two)[0]
    assert fig["clip_fraction"] == 1.0
    assert fig["clip_fraction/clip_by_global_norm"] == 1.0
    assert fig["clip_fraction/clip_update_norm"] == 1.0


@pytest.mark.parametrize("transforms,match", [
    (lambda: [optim.scale_by_adam()], "ends in scale_by_adam: expected scale_by_lr last"),
    (lambda: [optim.scale_by_adam(), optim.trace()], "ends in trace"),
    (lambda: [optim.scale_by_lr(), optim.scale_by_adam()], "scale_by_lr at position 0"),
    (lambda: [optim.clip_update_norm(1.0), optim.scale_by_adam(), optim.scale_by_lr()],
     "clip_update_norm at position 0 is invalid: expected it after a moments transform"),
])
def test_chains_that_cannot_step_fail_when_built(transforms, match):
    """A chain not ending in scale_by_lr gave an opaque TypeError or, ending in trace,
    silently ascended."""
    with pytest.raises(ValueError, match=match):
        optim.chain([torch.zeros(3, requires_grad=True)], *transforms())


def test_sparse_gradients_name_the_parameter_and_point_to_sparse_adam():
    emb = torch.nn.Embedding(10, 4, sparse=True)
    opt = optim.create("adam", list(emb.named_parameters()))
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(ValueError, match=r"parameter 'weight' has a sparse gradient.*"
                                         r"sparse_adam"):
        opt.step()
