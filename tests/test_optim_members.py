"""The newer members against their references: sparse_adam (torch's SparseAdam), nadamw and
radamw (torch's decoupled NAdam/RAdam), ADOPT and Lion (the papers' algorithms written out,
and pytorch_optimizer's implementations), gradient accumulation (optax MultiSteps: the
mean gradient of k micro-batches), skip_nonfinite(max_consecutive)."""

import io

import pytest
import pytorch_optimizer
import torch

import optim

f64 = torch.float64


def rel(a, b) -> float:
    return ((a.detach() - b.detach()).abs().max() / b.detach().abs().max()).item()


def test_sparse_adam_equals_torch_sparse_adam_on_a_sparse_embedding():
    """200 steps on two nn.Embedding(sparse=True) in two groups: rows a batch does not
    touch keep their moments (lazy), exactly as torch.optim.SparseAdam."""
    torch.manual_seed(0)
    ours = [torch.nn.Embedding(50, 8, sparse=True), torch.nn.Embedding(20, 4, sparse=True)]
    ref = [torch.nn.Embedding(50, 8, sparse=True), torch.nn.Embedding(20, 4, sparse=True)]
    for a, b in zip(ours, ref):
        b.load_state_dict(a.state_dict())
    groups = lambda embs: [{"params": embs[0].parameters()},  # noqa: E731
                           {"params": embs[1].parameters(), "lr": 3e-3}]
    opt = optim.create("sparse_adam", groups(ours), lr=1e-2, betas=(0.8, 0.99))
    ref_opt = torch.optim.SparseAdam(groups(ref), lr=1e-2, betas=(0.8, 0.99))
    gen = torch.Generator().manual_seed(1)
    for step in range(200):
        idx = [torch.randint(0, 50, (16,), generator=gen),
               torch.randint(0, 20, (3,), generator=gen)]
        target = torch.randn(16, 8, generator=gen)
        for embs, o in ((ours, opt), (ref, ref_opt)):
            o.zero_grad()
            loss = ((embs[0](idx[0]) - target) ** 2).sum() + embs[1](idx[1]).pow(3).sum()
            loss.backward()
            o.step()
        if step == 100:  # a round trip through a state_dict changes nothing
            buffer = io.BytesIO()
            torch.save(opt.state_dict(), buffer)
            buffer.seek(0)
            opt = optim.create("sparse_adam", groups(ours), lr=1e-2, betas=(0.8, 0.99))
            opt.load_state_dict(torch.load(buffer, weights_only=True))
    for a, b in zip(ours, ref):
        assert torch.equal(a.weight, b.weight)
        assert torch.equal(opt.state[a.weight]["exp_avg_sq"],
                           ref_opt.state[b.weight]["exp_avg_sq"])


def test_sparse_adam_refuses_dense_gradients_and_names_the_parameter():
    lin = torch.nn.Linear(3, 2)
    opt = optim.create("sparse_adam", list(lin.named_parameters()))
    lin(torch.ones(3)).sum().backward()
    with pytest.raises(ValueError, match=r"parameter 'weight' has a dense gradient.*use adam"):
        opt.step()
    with pytest.raises(ValueError, match="clip"):
        optim.create("sparse_adam", lin.parameters(), clip=1.0)


@pytest.mark.parametrize("name,cls", [("nadamw", torch.optim.NAdam),
                                      ("radamw", torch.optim.RAdam)])
def test_decoupled_nadam_and_radam_equal_torch(name, cls):
    torch.manual_seed(0)
    p = torch.randn(30, dtype=f64, requires_grad=True)
    q = p.detach().clone().requires_grad_()
    opt = optim.create(name, [p], lr=1e-2, weight_decay=0.1)
    ref = cls([q], lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True, foreach=True)
    for _ in range(300):
        g = torch.randn(30, dtype=f64) + p.detach()
        p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        ref.step()
    assert torch.equal(p, q)
    assert optim.create(name, [p]).param_groups[0]["weight_decay"] == 1e-2


def adopt_reference(p, grads, lr, b1, b2, eps, exponent, wd):
    """Taniguchi et al. (2024), Algorithm 1, with the clipping of the authors' code:
    v_0 = g_0^2; m_t = b1 m + (1-b1) clip(g_t / max(sqrt(v_{t-1}), eps), t^exponent);
    p -= lr m_t; v_t = b2 v + (1-b2) g_t^2 (t counts the updates, from 1)."""
    m, v = torch.zeros_like(p), None
    for t, g in enumerate(grads):
        g = g + wd * p
        if v is None:
            v = g * g
            continue
        normed = g / torch.clamp(v.sqrt(), min=eps)
        c = t**exponent
        m = b1 * m + (1 - b1) * normed.clamp(-c, c)
        p = p - lr * m
        v = b2 * v + (1 - b2) * g * g
    return p


def lion_reference(p, grads, lr, b1, b2, wd):
    """Chen et al. (2023), Algorithm 2: c = b1 m + (1-b1) g; p -= lr (sign(c) + wd p);
    m = b2 m + (1-b2) g."""
    m = torch.zeros_like(p)
    for g in grads:
        c = b1 * m + (1 - b1) * g
        p = p - lr * (torch.sign(c) + wd * p)
        m = b2 * m + (1 - b2) * g
    return p


def _run(opt, p, grads):
    for g in grads:
        p.grad = g.clone()
        opt.step()
    return p.detach()


def _grads(n=300, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(40, dtype=f64, generator=gen) * (1 + 9 * (i % 11 == 0))
            for i in range(n)]


@pytest.mark.parametrize("wd", [0.0, 0.05])
def test_adopt_follows_the_paper_and_pytorch_optimizer(wd):
    gen = torch.Generator().manual_seed(0)
    p0 = torch.randn(40, dtype=f64, generator=gen)
    grads, hp = _grads(), {"lr": 1e-2, "betas": (0.9, 0.99), "eps": 1e-6}
    p = p0.clone().requires_grad_()
    ours = _run(optim.create("adopt", [p], weight_decay=wd, **hp), p, grads)
    paper = adopt_reference(p0, grads, 1e-2, 0.9, 0.99, 1e-6, 0.25, wd)
    assert rel(ours, paper) <= 1e-12
    q = p0.clone().requires_grad_()
    # pytorch_optimizer counts steps from the initialising one: its step 2 is update 1
    ref = pytorch_optimizer.ADOPT([q], weight_decay=wd, clip_lambda=lambda s: (s - 1) ** 0.25,
                                  foreach=False, **hp)
    assert rel(ours, _run(ref, q, grads)) <= 1e-12
    first = p0.clone().requires_grad_()
    _run(optim.create("adopt", [first], **hp), first, grads[:1])
    assert torch.equal(first.detach(), p0)  # the first step only initialises v


@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_lion_follows_the_paper_and_pytorch_optimizer(wd):
    gen = torch.Generator().manual_seed(0)
    p0 = torch.randn(40, dtype=f64, generator=gen)
    grads = _grads()
    p = p0.clone().requires_grad_()
    ours = _run(optim.create("lion", [p], lr=1e-3, betas=(0.9, 0.99), weight_decay=wd), p,
                grads)
    assert rel(ours, lion_reference(p0, grads, 1e-3, 0.9, 0.99, wd)) <= 1e-12
    q = p0.clone().requires_grad_()
    ref = pytorch_optimizer.Lion([q], lr=1e-3, betas=(0.9, 0.99), weight_decay=wd,
                                 foreach=True)
    assert torch.equal(ours, _run(ref, q, grads))
    moved = (ours - p0).abs()
    assert moved.max() <= 300 * 1e-3 * (1 + 1e-9) + wd  # every step is lr per coordinate


@pytest.mark.parametrize("name,fused", [("adam", None), ("adamw", False), ("sgd", None)])
def test_accumulate_steps_on_the_mean_of_k_micro_batches(name, fused):
    """accumulate=4: three calls change nothing, the fourth is torch's step with the mean
    gradient; a parameter without gradient in some micro-batches counts those as zero, one
    without any gradient in a window does not step; resume mid-window is exact."""
    torch.manual_seed(0)
    init = [torch.randn(5, 3, dtype=f64), torch.randn(3, dtype=f64)]
    ours = [t.clone().requires_grad_() for t in init]
    refs = [t.clone().requires_grad_() for t in init]
    kwargs = {"lr": 1e-2, **({"momentum": 0.9} if name == "sgd" else {})}
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[name]
    opt = optim.create(name, ours, accumulate=4, fused=fused, **kwargs)
    ref = cls(refs, **kwargs)
    for window in range(12):
        micro = [[torch.randn(t.shape, dtype=f64) for t in init] for _ in range(4)]
        present = [[True, window % 3 != 1 or k == 0] for k in range(4)]  # bias: some, or one
        if window == 5:
            present = [[True, False]] * 4  # the bias gets no gradient in this window
        for k in range(4):
            before = [p.detach().clone() for p in ours]
            for p, g, has in zip(ours, micro[k], present[k]):
                p.grad = g.clone() if has else None
            opt.step()
            if k < 3:
                assert all(torch.equal(a, b) for a, b in zip(before, ours))
            if window == 7 and k == 1:  # resume in the middle of a window
                buffer = io.BytesIO()
                torch.save(opt.state_dict(), buffer)
                buffer.seek(0)
                opt = optim.create(name, ours, accumulate=4, fused=fused, **kwargs)
                opt.load_state_dict(torch.load(buffer, weights_only=True))
        for i, q in enumerate(refs):
            parts = [micro[k][i] for k in range(4) if present[k][i]]
            q.grad = None if not parts else sum(parts[1:], parts[0].clone()) / 4
        ref.step()
        assert max(rel(p, q) for p, q in zip(ours, refs)) <= 1e-12


def test_skip_nonfinite_raises_after_max_consecutive_skips():
    p = torch.zeros(3, requires_grad=True)
    opt = optim.create("adam", [p], skip_nonfinite=True, max_consecutive_skips=3)
    bad = torch.tensor([0.0, float("inf"), 0.0])
    for g in (bad, bad, torch.ones(3), bad, bad):  # a finite step resets the count
        p.grad = g.clone()
        opt.step()
    p.grad = bad.clone()
    with pytest.raises(FloatingPointError, match=r"3 steps in a row.*max_consecutive=3.*"
                                                 r"parameter 0 of param group 0"):
        opt.step()
    assert optim.telemetry(opt)[0]["skipped_steps"] == 5
    with pytest.raises(ValueError, match="max_consecutive_skips=3 is invalid without"):
        optim.create("adam", [p], max_consecutive_skips=3)
