"""What the transforms mean: order, decay, AMSGrad, skipping, resume, precision, errors."""

import io

import lightning as L
import pytest
import torch

import optim

f64 = torch.float64


def param(*shape, seed=0, dtype=f64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype).requires_grad_()


def step_with(opt, params, grads):
    for p, g in zip(params, grads):
        p.grad = g.clone()
    opt.step()


# --- order matters ----------------------------------------------------------------------


def test_clip_before_and_after_the_moments_give_different_moments():
    grads = [torch.full((4,), 100.0, dtype=f64), torch.full((4,), 0.1, dtype=f64)]
    before = param(4)
    after = before.detach().clone().requires_grad_()
    opt_before = optim.create("adam", [before], clip=1.0, clip_at="grad")
    opt_after = optim.create("adam", [after], clip=1.0, clip_at="update")
    for g in grads:
        step_with(opt_before, [before], [g])
        step_with(opt_after, [after], [g])
    m_before, m_after = opt_before.state[before]["exp_avg"], opt_after.state[after]["exp_avg"]
    # clipped first, the moments saw a gradient of norm 1 (0.5 per element); after, they saw 100
    expected_before = 0.9 * 0.1 * 0.5 + 0.1 * 0.1
    assert torch.allclose(m_before, torch.full((4,), expected_before, dtype=f64))
    assert torch.allclose(m_after, torch.full((4,), 0.9 * 0.1 * 100 + 0.1 * 0.1, dtype=f64))
    # and the update clip bounds the step: each step moved at most lr * max_update_norm
    assert (after.detach() - before.detach()).abs().max() > 0


def test_update_clip_bounds_every_step():
    p = param(50)
    opt = optim.create("adam", [p], lr=0.1, clip=0.5, clip_at="update")
    gen = torch.Generator().manual_seed(3)
    for _ in range(20):
        old = p.detach().clone()
        step_with(opt, [p], [torch.randn(50, generator=gen, dtype=f64) * 1e3])
        assert torch.linalg.vector_norm(p.detach() - old) <= 0.1 * 0.5 * (1 + 1e-9)
    assert optim.telemetry(opt)[0]["clip_fraction"] == 1.0


def test_one_step_adam_l2_vs_adamw_is_the_closed_form():
    lr, wd, eps = 0.01, 0.1, 1e-8
    p0 = param(20, seed=1)
    g = param(20, seed=2).detach()
    l2, w = p0.detach().clone().requires_grad_(), p0.detach().clone().requires_grad_()
    step_with(optim.create("adam_l2", [l2], lr=lr, weight_decay=wd, eps=eps), [l2], [g])
    step_with(optim.create("adamw", [w], lr=lr, weight_decay=wd, eps=eps), [w], [g])
    x = p0.detach()
    coupled = g + wd * x  # L2 enters the moments, then is normalised away on step one
    expected = lr * (g / (g.abs() + eps) + wd * x - coupled / (coupled.abs() + eps))
    assert torch.allclose(l2.detach() - w.detach(), expected, rtol=1e-12, atol=1e-15)


def test_adamw_decays_weights_with_large_gradient_history_and_adam_l2_barely():
    """Loshchilov & Hutter: under L2, decay is divided by sqrt(v_hat), so a weight whose
    gradient is large (mean zero) hardly decays; AdamW shrinks it at lr*wd per step."""
    lr, wd, steps = 1e-3, 1.0, 2000
    l2 = torch.ones(8, dtype=f64, requires_grad=True)
    w = torch.ones(8, dtype=f64, requires_grad=True)
    opt_l2 = optim.create("adam_l2", [l2], lr=lr, weight_decay=wd)
    opt_w = optim.create("adamw", [w], lr=lr, weight_decay=wd)
    for t in range(steps):
        g = torch.full((8,), 100.0 if t % 2 else -100.0, dtype=f64)
        step_with(opt_l2, [l2], [g])
        step_with(opt_w, [w], [g])
    assert abs(l2.detach().mean().item() - 1.0) < 0.05
    assert w.detach().mean().item() < 0.2  # ~ (1 - lr*wd)**2000 = 0.135


def test_zero_gradient_weight_adamw_shrinks_geometrically_adam_l2_by_normalised_steps():
    """With no loss gradient, AdamW is p *= (1 - lr*wd); Adam with L2 sees only wd*p as its
    gradient and, normalised by its own sqrt(v), steps by ~lr toward zero."""
    lr, wd = 1e-3, 1e-2
    l2 = torch.full((4,), 2.0, dtype=f64, requires_grad=True)
    w = torch.full((4,), 2.0, dtype=f64, requires_grad=True)
    opt_l2 = optim.create("adam_l2", [l2], lr=lr, weight_decay=wd)
    opt_w = optim.create("adamw", [w], lr=lr, weight_decay=wd)
    for _ in range(100):
        step_with(opt_l2, [l2], [torch.zeros(4, dtype=f64)])
        step_with(opt_w, [w], [torch.zeros(4, dtype=f64)])
    assert torch.allclose(w.detach(), torch.full((4,), 2.0 * (1 - lr * wd) ** 100, dtype=f64))
    assert torch.allclose(l2.detach(), torch.full((4,), 2.0 - 100 * lr, dtype=f64), rtol=1e-3)


def test_amsgrad_denominator_never_decreases_while_adams_does():
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(30, generator=gen, dtype=f64) * (10.0 if t < 20 else 0.1)
             for t in range(200)]
    histories = {}
    for name in ("adam", "amsgrad"):
        p = param(30)
        opt = optim.create(name, [p])
        key = "max_exp_avg_sq" if name == "amsgrad" else "exp_avg_sq"
        hist = []
        for g in grads:
            step_with(opt, [p], [g])
            hist.append(opt.state[p][key].clone())
        histories[name] = torch.stack(hist)
    assert (histories["amsgrad"].diff(dim=0) >= 0).all()
    assert (histories["adam"].diff(dim=0) < 0).any()


# --- skip_nonfinite -----------------------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("name,kw", [("adam", {}), ("adamw", {"clip": 1.0}), ("nadam", {}),
                                     ("sgd", {"momentum": 0.9}), ("yogi", {})])
def test_skip_nonfinite_changes_nothing_and_counts(name, kw, bad):
    a, b = param(5, 3, dtype=torch.float32), param(7, seed=1, dtype=torch.float32)
    opt = optim.create(name, [{"params": [a]}, {"params": [b], "lr": 0.1}],
                       skip_nonfinite=True, **kw)
    step_with(opt, [a, b], [torch.ones(5, 3), torch.ones(7)])
    snapshot = io.BytesIO()
    torch.save((a.detach().clone(), b.detach().clone(), opt.state_dict()), snapshot)
    poisoned = torch.ones(7)
    poisoned[3] = bad
    step_with(opt, [a, b], [torch.ones(5, 3), poisoned])
    snapshot.seek(0)
    a0, b0, sd0 = torch.load(snapshot, weights_only=False)
    assert torch.equal(a.detach(), a0) and torch.equal(b.detach(), b0)
    for key, value in opt.state_dict()["state"].items():
        for k, v in value.items():
            assert torch.equal(v, sd0["state"][key][k]), k
    assert [s["skipped_steps"] for s in optim.telemetry(opt)] == [1, 1]
    step_with(opt, [a, b], [torch.ones(5, 3), torch.ones(7)])
    assert not torch.equal(b.detach(), b0)  # a finite step goes through again


def test_skip_nonfinite_must_come_first():
    with pytest.raises(ValueError, match="skip_nonfinite at position 1"):
        optim.chain([param(3)], optim.scale_by_adam(), optim.skip_nonfinite(),
                    optim.scale_by_lr())


# --- exact resume ----------------------------------------------------------------------


def _run(opt_factory, params, steps, start=0):
    opt = opt_factory(params)
    for t in range(start, start + steps):
        gen = torch.Generator().manual_seed(t)
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen) * (5.0 if t % 17 == 0 else 1.0)
        opt.step()
    return opt


@pytest.mark.parametrize("name,kw", [
    ("adam", {}), ("adamw", {"clip": 1.0}), ("amsgrad", {}), ("nadam", {}), ("radam", {}),
    ("adamax", {}), ("sgd", {"momentum": 0.9, "nesterov": True}),
    ("rmsprop", {"centered": True, "momentum": 0.5}), ("adabelief", {}), ("yogi", {}),
    ("adam", {"clip": 0.1, "clip_at": "update", "skip_nonfinite": True}),
])
def test_resume_is_bitwise_exact(name, kw):
    def factory(ps):
        return optim.create(name, [{"params": ps[:1]}, {"params": ps[1:], "lr": 3e-3}], **kw)

    straight = [param(6, 4, dtype=torch.float32), param(4, seed=1, dtype=torch.float32)]
    _run(factory, straight, 200)

    first = [param(6, 4, dtype=torch.float32), param(4, seed=1, dtype=torch.float32)]
    opt = _run(factory, first, 100)
    buffer = io.BytesIO()
    torch.save({"params": [p.detach() for p in first], "opt": opt.state_dict()}, buffer)
    buffer.seek(0)
    ckpt = torch.load(buffer, weights_only=True)
    resumed = [p.clone().requires_grad_() for p in ckpt["params"]]
    fresh = factory(resumed)
    fresh.load_state_dict(ckpt["opt"])
    for t in range(100, 200):
        gen = torch.Generator().manual_seed(t)
        for p in resumed:
            p.grad = torch.randn(p.shape, generator=gen) * (5.0 if t % 17 == 0 else 1.0)
        fresh.step()
    for a, b in zip(straight, resumed):
        assert torch.equal(a, b)
    assert fresh.stats[0].steps == 200


# --- precision ------------------------------------------------------------------------


@pytest.mark.parametrize("low", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_16bit_params_step_on_a_float32_master_and_round_once(low):
    """bf16/fp16 weights: moments, decay and update in float32 on a float32 master copy,
    rounded once into the weight. So the weight is exactly torch's AdamW on float32 weights
    (fed the gradients of the rounded weights), rounded; and the state round-trips."""
    target = param(64, seed=5, dtype=torch.float32).detach()
    master = torch.zeros(64, requires_grad=True)
    weight = torch.zeros(64, dtype=low, requires_grad=True)
    ref = torch.optim.AdamW([master], lr=1e-2, foreach=True)
    opt = optim.create("adamw", [weight], lr=1e-2, fused=False)
    for _ in range(300):
        step_with(opt, [weight], [(weight.detach().float() - target).to(low)])
        master.grad = (master.detach().to(low).float() - target).to(low).float()
        ref.step()
    assert torch.equal(weight.detach(), master.detach().to(low))
    assert (weight.detach().float() - target).abs().mean() < 0.1 * target.abs().mean()
    assert weight.dtype == low and opt.state[weight]["exp_avg_sq"].dtype == torch.float32
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    again = optim.create("adamw", [weight.detach().clone().requires_grad_()], lr=1e-2)
    again.load_state_dict(torch.load(buffer, weights_only=True))
    reloaded = next(iter(again.state.values()))
    for key in ("exp_avg_sq", "master_param"):
        assert reloaded[key].dtype == torch.float32
        assert torch.equal(reloaded[key], opt.state[weight][key])


@pytest.mark.parametrize("fused", [None, False], ids=["auto", "unfused"])
def test_bf16_decoupled_decay_is_not_rounded_away(fused):
    """Weights 1.0, zero gradient, AdamW lr = wd = 1e-2 for 100 steps: float32 weights reach
    (1 - 1e-4)^100 = 0.990; bf16 weights must too (to a bf16 ulp), not stay at 1.0 because
    each step's decay is below half an ulp."""
    w = torch.ones(8, dtype=torch.bfloat16, requires_grad=True)
    opt = optim.create("adamw", [w], lr=1e-2, weight_decay=1e-2, fused=fused)
    for _ in range(100):
        step_with(opt, [w], [torch.zeros(8, dtype=torch.bfloat16)])
    expected = (1 - 1e-4) ** 100
    assert (w.detach().float() - expected).abs().max() <= 2**-8


def test_16bit_master_follows_an_assigned_weight():
    """A weight assigned between steps (a checkpoint load, an EMA swap) is what the next step
    starts from; the master must not overwrite it."""
    w = torch.zeros(4, dtype=torch.bfloat16, requires_grad=True)
    opt = optim.create("sgd", [w], lr=0.5)
    step_with(opt, [w], [torch.ones(4, dtype=torch.bfloat16)])
    with torch.no_grad():
        w.fill_(3.0)
    step_with(opt, [w], [torch.ones(4, dtype=torch.bfloat16)])
    assert torch.equal(w.detach(), torch.full((4,), 2.5, dtype=torch.bfloat16))


# --- schedulers and Lightning ---------------------------------------------------------


def test_torch_schedulers_drive_the_group_lr():
    p = param(3)
    opt = optim.create("adam", [p], lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.0)
    step_with(opt, [p], [torch.ones(3, dtype=f64)])
    sched.step()
    frozen = p.detach().clone()
    step_with(opt, [p], [torch.ones(3, dtype=f64)])
    assert opt.param_groups[0]["lr"] == 0.0 and torch.equal(p.detach(), frozen)


def test_step_hooks_see_every_step_and_may_replace_its_arguments():
    """The step skips torch's hook wrapper only while nothing is registered: the hooks of
    the optimizer and torch's global optimizer hooks still see each step, in torch's order."""
    import torch.optim.optimizer as hooks

    p = param(3)
    opt = optim.create("sgd", [p], lr=1.0)
    seen = []

    def pre(o, args, kwargs):
        assert o is opt
        seen.append(("pre", p.detach().clone()))

    def post(o, args, kwargs):
        seen.append(("post", p.detach().clone()))

    def replace(o, args, kwargs):  # torch's contract: may return (args, kwargs)
        return args, {"closure": lambda: torch.tensor(7.0)}

    start = p.detach().clone()
    handles = [opt.register_step_pre_hook(pre), opt.register_step_post_hook(post),
               hooks.register_optimizer_step_pre_hook(lambda o, a, k: seen.append(("global pre",))),
               hooks.register_optimizer_step_post_hook(
                   lambda o, a, k: seen.append(("global post",)))]
    try:
        step_with(opt, [p], [torch.ones(3, dtype=f64)])
        assert [s[0] for s in seen] == ["global pre", "pre", "post", "global post"]
        assert torch.equal(seen[1][1], start) and torch.equal(seen[2][1], start - 1)
        replaced = opt.register_step_pre_hook(replace)
        assert opt.step().item() == 7.0  # the hook's closure ran
        replaced.remove()
    finally:
        for h in handles:
            h.remove()
    seen.clear()
    step_with(opt, [p], [torch.ones(3, dtype=f64)])
    assert seen == [] and torch.equal(p.detach(), start - 3)


def test_the_profiler_sees_step_and_zero_grad():
    p = param(3)
    opt = optim.create("adam", [p], lr=0.1)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step_with(opt, [p], [torch.ones(3, dtype=f64)])
        opt.zero_grad()
    names = {e.name for e in prof.events()}
    assert "Optimizer.step#ChainOptimizer.step" in names
    assert "Optimizer.zero_grad#ChainOptimizer.zero_grad" in names
    assert p.grad is None


def test_zero_grad_keeps_torchs_meaning():
    p, q = param(3), param(2, seed=1)
    opt = optim.create("adam", [p, q], lr=0.1)
    p.grad = torch.ones(3, dtype=f64)
    opt.zero_grad(set_to_none=False)
    assert torch.equal(p.grad, torch.zeros(3, dtype=f64)) and q.grad is None
    opt.zero_grad()
    assert p.grad is None and q.grad is None


def test_cyclical_schedules_never_touch_beta1():
    p = param(3)
    opt = optim.create("adam", [p], lr=1e-3, betas=(0.9, 0.999))
    sched = optim.schedules.cyclical(opt, base_lr=1e-4, max_lr=1e-2, step_size_up=5)
    lrs = []
    for _ in range(20):
        step_with(opt, [p], [torch.ones(3, dtype=f64)])
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
        assert opt.param_groups[0]["betas"] == (0.9, 0.999)
    assert max(lrs) == pytest.approx(1e-2) and min(lrs) == pytest.approx(1e-4)
    # torch's own default would have cycled beta1 on this optimizer
    torch_sched = torch.optim.lr_scheduler.CyclicLR(opt, 1e-4, 1e-2, step_size_up=5)
    torch_sched.step()
    assert opt.param_groups[0]["betas"][0] != 0.9


def test_warmup_cosine_and_one_cycle_shapes():
    opt = optim.create("adam", [param(3)], lr=1.0)
    sched = optim.schedules.warmup_cosine(opt, warmup_steps=10, total_steps=110, min_factor=0.1)
    lrs = []
    for _ in range(110):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[60] == pytest.approx(0.1 + 0.9 * 0.5) and lrs[-1] == pytest.approx(0.1, abs=1e-3)
    opt = optim.create("adam", [param(3)], lr=1.0)
    sched = optim.schedules.one_cycle(opt, max_lr=1.0, total_steps=100)
    peak = []
    for _ in range(99):
        opt.step()
        sched.step()
        peak.append(opt.param_groups[0]["lr"])
        assert opt.param_groups[0]["betas"] == (0.9, 0.999)
    assert max(peak) == pytest.approx(1.0, rel=1e-3)


class _Regression(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, _):
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self):
        opt = optim.create("adamw", self.parameters(), lr=0.05, clip=10.0)
        return {"optimizer": opt, "lr_scheduler": optim.schedules.warmup_cosine(opt, 5, 100)}


def test_inside_a_real_lightning_fit(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(256, 4)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)
    model = _Regression()
    initial = torch.nn.functional.mse_loss(model.layer(x), y).item()
    trainer = L.Trainer(max_epochs=12, accelerator="cpu", logger=False,
                        enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.fit(model, loader)
    assert isinstance(trainer.optimizers[0], optim.ChainOptimizer)
    loss = torch.nn.functional.mse_loss(model.layer(x), y).item()
    assert loss < initial / 10
    ckpt = torch.load(trainer.checkpoint_callback.best_model_path or next(
        tmp_path.rglob("*.ckpt")), weights_only=False)
    assert ckpt["optimizer_states"][0]["chain_stats"][0]["steps"] == 12 * 8


# --- telemetry -----------------------------------------------------------------------


def test_effective_step_is_lr_over_sqrt_vhat_plus_eps():
    p = param(1000)
    opt = optim.create("adam", [p], lr=0.01)
    gen = torch.Generator().manual_seed(0)
    for _ in range(10):
        step_with(opt, [p], [torch.randn(1000, generator=gen, dtype=f64)])
    v_hat = opt.state[p]["exp_avg_sq"] / (1 - 0.999**10)
    expected = 0.01 / (v_hat.sqrt() + 1e-8)
    assert torch.allclose(optim.effective_step(opt, p), expected)
    fig = optim.telemetry(opt)[0]
    assert fig["effective_step_p50"] == pytest.approx(expected.median().item(), rel=1e-3)
    assert fig["effective_step_p5"] < fig["effective_step_p50"] < fig["effective_step_p95"]
    assert "update_to_weight" not in fig  # nothing recorded unless asked
    opt.record_updates = True
    old = p.detach().clone()
    step_with(opt, [p], [torch.randn(1000, generator=gen, dtype=f64)])
    fig = optim.telemetry(opt)[0]
    rms = lambda t: t.pow(2).mean().sqrt().item()  # noqa: E731
    assert fig["update_to_weight"] == pytest.approx(rms(p.detach() - old) / rms(p.detach()))
    assert fig["grad_norm"] > 0


# --- bad hyperparameters --------------------------------------------------------------


@pytest.mark.parametrize("call,match", [
    (lambda p: optim.create("adam", p, lr=-1.0), r"lr=-1\.0 .*>= 0"),
    (lambda p: optim.create("adam", p, betas=(0.9, 1.0)), r"betas=\(0\.9, 1\.0\).*\[0, 1\)"),
    (lambda p: optim.create("adamw", p, betas=(-0.1, 0.9)), r"betas=.*\[0, 1\)"),
    (lambda p: optim.create("adam", p, eps=0.0), r"eps=0\.0 .*> 0"),
    (lambda p: optim.create("adamm", p), r"name='adamm'.*'adam'"),
    (lambda p: optim.create("adam", p, clip=1.0, clip_kind="median"),
     r"clip_kind='median'.*'global_norm'"),
    (lambda p: optim.create("adam", p, clip=1.0, clip_at="moments"),
     r"clip_at='moments'.*'grad', 'update'"),
    (lambda p: optim.create("adam", p, clip=1.0, clip_at="update", clip_kind="agc"),
     r"clip_kind='agc'"),
    (lambda p: optim.create("adam", p, beta1=0.9), r"hyperparameter='beta1'.*'betas'"),
    (lambda p: optim.create("sgd", [{"params": p, "lr": -0.5}]), r"lr=-0\.5"),
    (lambda p: optim.create("sgd", p, nesterov=True), r"nesterov=True .*momentum > 0"),
])
def test_bad_hyperparameters_raise_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call([param(3)])


def test_available_lists_every_preset():
    assert {"adam", "adamw", "adam_l2", "amsgrad", "nadam", "radam", "adamax", "adabelief",
            "yogi", "sgd", "rmsprop"} <= set(optim.available())
