"""The domain studies (rl, mlip) end to end through `adamlab study` on a tiny budget: every
cell a real `adamlab train` run, the report's numbers are the CSV's, the figures are PNGs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from test_studies import check_study_run

from pipelines import study
from pipelines.studies import STUDIES, mlip

TINY_DOMAINS = {
    "rl": ["study.quick.seeds={report: 2, tuning: 1}", "study.quick.total_timesteps=1500",
           "study.quick.eval_episodes=1", "study.quick.algorithms_used=[reinforce_nobaseline,ppo]",
           "study.quick.diagnostic_rollouts=4", "study.diagnostic.warm=2",
           "study.quick.grid={adam_lr: [1.0e-3], sgd_lr: [1.0e-2]}", "study.workers=1"],
    "mlip": ["study.quick.seeds={report: 1, tuning: 1}", "study.quick.n_configs=40",
             "study.quick.epochs=2",
             "study.quick.handlings_used=[none,grad_clip,filter]",
             # these tiny data hold no force above 5 eV/A: filter and score at 2 eV/A
             "study.score_max_force=2.0",
             "study.handlings.filter=['clip=none','pipeline.max_force=2.0']",
             "study.quick.model=['model.hidden=8','model.num_interactions=1',"
             "'model.num_rbf=8','+data.size=[1,1,1]','+data.snapshots_per_run=5']"],
    "gnn": ["study.quick.seeds={report: 2, tuning: 1}", "study.quick.num_nodes=200",
            "study.quick.steps=6", "study.quick.minibatch_steps=8",
            "study.regimes.full.eval_every=2", "study.workers=1",
            "study.quick.graphs_used=[powerlaw_2.1,near_regular,cora]",
            "~study.quick.grid.adam_lr", "+study.quick.grid.adam_lr=[0.01]",
            "~study.quick.grid.sgd_lr", "+study.quick.grid.sgd_lr=[0.1]",
            "study.model.hidden=8", "study.model.embedding_dim=4"],
}


@pytest.fixture(autouse=True)
def _quiet(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("ADAMLAB_CACHE", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_domain_studies_are_registered():
    assert {"rl", "mlip"} <= set(STUDIES)


@pytest.mark.parametrize("name", ["rl", "mlip"])
def test_domain_study_end_to_end(name, tmp_path):
    out = tmp_path / "run"
    study.main([name, f"hydra.run.dir={out}", *TINY_DOMAINS[name]])
    figures, results, summary = check_study_run(out)
    assert len(figures) == 2
    # every cell is a real training run with its own run directory and summary
    runs = sorted((out / "runs").iterdir())
    assert len(runs) == len([r for r in results if r.get("kind", "run") == "run"])
    for run in runs:
        assert json.loads((run / "summary.json").read_text())["pipeline"] == name
    # each optimizer tuned per cell on its own grid, on the tuning seeds only
    picks = summary["tuning"]["picks"]
    assert {pk["arm"] for pk in picks} == {"adam", "sgd"} and all(pk["tuned"] for pk in picks)
    if name == "rl":
        check_rl_run(out, results, summary)


def check_rl_run(out, results, summary):
    """The diagnostic measured both directions at the same snapshots of each reference seed;
    the training runs' confounds are off: two clip groups (PPO), no normalisation and no
    critic for REINFORCE without baseline."""
    import yaml

    diag = [r for r in results if r["kind"] == "diagnostic"]
    seeds = summary["seeds"]["report"]
    for algo in ("reinforce_nobaseline", "ppo"):
        cells = {(float(r["snapshot"]), int(r["seed"]), r["direction"]) for r in diag
                 if r["algorithm"] == algo}
        assert cells == {(f, s, d) for f in (0.0, 0.25, 0.5, 0.75) for s in seeds
                         for d in ("adam", "sgd")}
    runs = [r for r in results if r["kind"] == "run"]
    for r in runs:
        assert r["clip_rate_actor"] != ""
        assert (r["clip_rate_critic"] != "") == (r["algorithm"] == "ppo")
    cfg = yaml.safe_load(next((out / "runs").glob("CartPole-v1-reinforce_nobaseline-*"))
                         .joinpath("config.yaml").read_text())
    assert cfg["algo"]["norm_adv"] is False and cfg["algo"]["baseline"] is False
    cfg = yaml.safe_load(next((out / "runs").glob("CartPole-v1-ppo-*"))
                         .joinpath("config.yaml").read_text())
    assert cfg["clip"]["scope"] == "group" and set(cfg["optim"]["module_lr"]["agent"]) == {
        "actor", "critic"}


def falling_loss(n: int = 400, seed: int = 0) -> list[float]:
    """A training loss that falls 1000-fold with minibatch noise of +-50 %: no instability."""
    rng = np.random.default_rng(seed)
    return list(10.0 * np.exp(-np.arange(n) / 58.0) * rng.uniform(0.5, 1.5, n))


def test_spikes_find_an_injected_spike_and_nothing_in_a_falling_loss():
    clean = falling_loss()
    assert mlip.spikes(clean, 10.0, 50) == []
    for at, size in ((120, 30.0), (300, 15.0), (399, 11.0 * 1.5)):
        spiked = list(clean)
        spiked[at] = size * float(np.median(clean[at - 50:at]))
        assert mlip.spikes(spiked, 10.0, 50) == [at], (at, size)
    # a jump below the factor is no spike; a non-finite loss always is
    below = list(clean)
    below[200] = 8.0 * float(np.median(clean[150:200]))
    assert mlip.spikes(below, 10.0, 50) == []
    nan = list(clean)
    nan[10] = float("nan")
    assert mlip.spikes(nan, 10.0, 50) == [10]


def test_spikes_need_a_history_before_they_count():
    # the first steps cannot spike until window // 5 losses precede them
    assert mlip.spikes([1.0, 100.0, 1.0], 10.0, 50) == []
    assert mlip.spikes([1.0] * 10 + [100.0], 10.0, 50) == [10]
    assert mlip.spikes([1.0] * 9 + [100.0], 10.0, 50) == []


def test_step_losses_group_steps_by_epoch():
    rows = [{"epoch": "0", "train_loss": "4"}, {"epoch": "0", "train_loss": "2"},
            {"epoch": "0", "train_loss": ""}, {"epoch": "1", "train_loss": "1"}]
    assert mlip.step_losses(rows) == ([4.0, 2.0, 1.0], [3.0, 1.0])


def test_spike_injected_into_a_real_run_is_counted(tmp_path):
    """A real tiny `adamlab train pipeline=mlip` run: the study's row counts the spikes of its
    step losses; the same run with one step's loss raised 30x over the median of the 50
    steps before it counts exactly one more, and is flagged diverged_or_spiked."""
    from omegaconf import OmegaConf

    from pipelines.studies.problems.training import train

    p = OmegaConf.create({"spike": {"factor": 10.0, "window": 50}, "explode_factor": 10.0})
    overrides = ["pipeline=mlip", "data=emt", "data.n_configs=40", "data.seed=0", "seed=0",
                 "logger=csv", "trainer.enable_progress_bar=false", "trainer.max_epochs=3",
                 "pipeline.batch_size=2", "pipeline.score_max_force=20.0", "model.hidden=8",
                 "model.num_interactions=1", "model.num_rbf=8", "+data.size=[1,1,1]",
                 "+data.snapshots_per_run=5", "clip=none", "optim=sgd", "optim.lr=1e-3",
                 "optim.momentum=0.9"]
    metrics, rows = train(overrides, tmp_path / "run")
    clean = mlip.measure(p, metrics, rows)
    steps = clean["_steps"]
    assert len(steps) > 30
    # kept and dropped parts of the test set are scored separately and add up to it
    split = metrics["test_by_max_force"]
    assert split["kept"]["n_structures"] + split["dropped"]["n_structures"] == metrics["n_test"]
    before = set(mlip.spikes(steps, 10.0, 50))  # close-approach batches spike by themselves
    at = max(k for k in range(len(steps) - 1) if k not in before and k + 1 not in before)
    loss_rows = [k for k, r in enumerate(rows) if r.get("train_loss", "") != ""]
    injected = [dict(r) for r in rows]
    window = steps[max(0, at - 50):at]
    injected[loss_rows[at]]["train_loss"] = str(30.0 * float(np.median(window)))
    spiked = mlip.measure(p, metrics, injected)
    assert set(mlip.spikes(spiked["_steps"], 10.0, 50)) == before | {at}
    assert spiked["loss_spikes"] == clean["loss_spikes"] + 1
    assert spiked["diverged_or_spiked"] == 1


def test_cells_in_worker_processes_equal_cells_in_turn(tmp_path):
    """study.workers > 1: the same runs, in the same order, with the same results."""
    from pipelines.studies.problems.training import train_all

    cells = [(["pipeline=rl", "algo=ppo", f"seed={s}", "logger=csv",
               "pipeline.total_timesteps=1024", "trainer.enable_progress_bar=false"],
              tmp_path / f"{mode}-{s}") for mode in ("turn", "pool") for s in (0, 1)]
    in_turn = train_all(cells[:2], workers=1)
    in_pool = train_all(cells[2:], workers=2)
    assert [m for m, _ in in_pool] == [m for m, _ in in_turn]
    assert in_turn[0][0] != in_turn[1][0]  # two seeds, two results: the order is checked
    assert [len(rows) for _, rows in in_pool] == [len(rows) for _, rows in in_turn]


# ---- the rl diagnostic: the update direction's noise at a fixed policy ------------------------

def gaussian_gradients(mean, std, draws: int, batch: int, seed: int) -> torch.Tensor:
    """``draws`` gradients, each the mean of ``batch`` per-sample gradients N(mean, std^2)."""
    g = torch.Generator().manual_seed(seed)
    mean = torch.as_tensor(mean, dtype=torch.float64)
    std = torch.as_tensor(std, dtype=torch.float64)
    return mean + std * torch.randn(draws, len(mean), generator=g, dtype=torch.float64) \
        / math.sqrt(batch)


def test_noise_to_signal_matches_the_closed_form():
    from pipelines.rl.diagnostics import noise_to_signal

    mean, std = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([3.0, 1.0, 2.0])
    trace, signal, ratio = noise_to_signal(gaussian_gradients(mean, std, 40000, 1, 0))
    assert trace == pytest.approx(14.0, rel=0.03)     # tr Cov = sum of variances
    assert signal == pytest.approx(5.25, rel=0.03)    # ||E u||^2, bias removed
    assert ratio == pytest.approx(14.0 / 5.25, rel=0.05)
    # pure noise: no measurable signal, the ratio is inf (not a small number)
    _, _, none = noise_to_signal(gaussian_gradients([0.0] * 50, [1.0] * 50, 400, 1, 1)
                                 + 1e-3)
    assert none == math.inf or none > 50


def test_adam_direction_is_less_noisy_where_the_noise_sits_on_weak_coordinates():
    """By design: half the coordinates carry the signal with little noise, half carry
    little signal and large noise. Dividing by sqrt(v_hat) shrinks the noisy half, so Adam's
    direction has a far lower noise-to-signal ratio than SGD's; the noise variance and
    Adam's step are anti-correlated over the parameters."""
    from pipelines.rl.diagnostics import adam_preconditioner, direction_noise

    d, batch = 20, 8
    mean = [1.0] * (d // 2) + [0.01] * (d // 2)
    std = [0.3] * (d // 2) + [20.0] * (d // 2)
    warm = gaussian_gradients(mean, std, 200, batch, 0)
    out = direction_noise(gaussian_gradients(mean, std, 400, batch, 1), batch,
                          adam_preconditioner(warm, 0.999, 1e-8))
    # closed forms: per coordinate variance s^2 / batch, v = G^2 + s^2 / batch
    var = np.array(std) ** 2 / batch
    v = np.array(mean) ** 2 + var
    assert out["nsr_sgd"] == pytest.approx(var.sum() / np.sum(np.array(mean) ** 2), rel=0.15)
    assert out["nsr_adam"] == pytest.approx(np.sum(var / v) / np.sum(np.array(mean) ** 2 / v),
                                            rel=0.25)
    assert out["nsr_adam"] < 0.1 * out["nsr_sgd"]
    assert out["noise_scale"] == pytest.approx(batch * out["nsr_sgd"])
    for d in ("sgd", "adam"):  # the signal fraction is 1 / (1 + nsr)
        assert out[f"signal_{d}"] == pytest.approx(1 / (1 + out[f"nsr_{d}"]))
    assert out["signal_adam"] > out["signal_sgd"]
    assert out["noise_step_corr"] < -0.8


def test_adam_direction_is_as_noisy_as_sgds_under_isotropic_noise():
    """Where the claim cannot hold: every coordinate has the same signal size and the same
    noise, so v_hat is one number up to its estimation error and Adam's direction is SGD's
    rescaled: the same noise-to-signal ratio, within noise."""
    from pipelines.rl.diagnostics import adam_preconditioner, direction_noise

    d, batch = 40, 8
    signs = torch.tensor([(-1.0) ** k for k in range(d)])
    ratios = []
    for seed in range(5):
        warm = gaussian_gradients(signs, [2.0] * d, 200, batch, 2 * seed)
        out = direction_noise(gaussian_gradients(signs, [2.0] * d, 400, batch, 2 * seed + 1),
                              batch, adam_preconditioner(warm, 0.999, 1e-8))
        assert out["nsr_sgd"] == pytest.approx(4.0 / batch, rel=0.25)
        ratios.append(out["nsr_ratio"])
    assert np.mean(ratios) == pytest.approx(1.0, abs=0.05)


def bootstrap(grads, batch, precondition, key: str, resamples: int = 300) -> tuple:
    """95 % percentile CI of ``direction_noise(...)[key]`` over rollouts resampled."""
    from pipelines.rl.diagnostics import direction_noise

    g = torch.Generator().manual_seed(0)
    values = []
    for _ in range(resamples):
        idx = torch.randint(len(grads), (len(grads),), generator=g)
        values.append(direction_noise(grads[idx], batch, precondition)[key])
    return tuple(np.quantile(values, [0.025, 0.975]))


def test_noise_scale_and_ratio_are_batch_size_free_at_a_fixed_policy():
    """CartPole, PPO's policy gradient at one fixed policy (the initial one), Adam's v_hat
    rebuilt once: 4x as many env streams per rollout leave the noise scale, Adam's and the
    Adam/SGD ratio unchanged within noise (95 % bootstrap CIs overlap), while the raw
    noise-to-signal ratio of a batch falls about 4x (the CIs separate: the test can fail)."""
    from pipelines.rl.diagnostics import adam_preconditioner, noise_to_signal
    from pipelines.studies import rl_diagnostic as diag
    from pipelines.studies.problems.training import compose_train

    cfg = compose_train(["pipeline=rl", "algo=ppo", "env.id=CartPole-v1", "algo.n_steps=16"])
    _, _, make_agent = diag.pieces(cfg)
    agent = make_agent(0)
    warm = diag.rollout_gradients(cfg, agent, 8, diag.env_seeds(diag.WARM_SEED, 0, 16, 8))
    precondition = adam_preconditioner(warm, 0.999, 1e-5)
    cis, raw = {}, {}
    for b in (8, 32):
        grads = diag.rollout_gradients(cfg, agent, b, diag.env_seeds(diag.MEASURE_SEED, b, 64, b))
        cis[b] = {key: bootstrap(grads, b, precondition, key)
                  for key in ("noise_scale", "noise_scale_adam", "nsr_ratio")}
        raw[b] = noise_to_signal(grads)
    for key in ("noise_scale", "noise_scale_adam", "nsr_ratio"):
        (lo1, hi1), (lo4, hi4) = cis[8][key], cis[32][key]
        assert lo1 <= hi4 and lo4 <= hi1, (key, cis)
    # the batch really is 4x larger: its gradient noise tr Cov falls about 4x, and so does the
    # raw noise-to-signal ratio (which is why the study reports the batch-free ones)
    assert 3.0 < raw[8][0] / raw[32][0] < 5.3, raw
    assert 2.0 < raw[8][2] / raw[32][2] < 8.0, raw


class GeometricEpisodes:
    """A gymnasium env whose episodes end with probability ``p`` at every step, whatever
    the action: lengths are geometric with mean 1 / p."""

    def __new__(cls, p: float = 0.05):
        import gymnasium as gym

        class Env(gym.Env):
            observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
            action_space = gym.spaces.Discrete(2)

            def reset(self, *, seed=None, options=None):
                super().reset(seed=seed)
                return np.zeros(1, np.float32), {}

            def step(self, action):
                done = bool(self.np_random.random() < p)
                return np.zeros(1, np.float32), 1.0, done, False, {}

        return Env()


def kept_lengths(rollout) -> list[int]:
    out = []
    for n in range(rollout.valid.shape[1]):
        kept = int(rollout.valid[:, n].sum())
        ends = torch.nonzero(rollout.dones[:kept, n]).flatten().tolist()
        out += list(np.diff([-1, *ends]))
    return out


def test_reinforce_episode_selection_is_not_biased_to_short_episodes():
    """Geometric episode lengths (mean 20): the episodes REINFORCE keeps have mean length
    20 within noise. The rule this replaced (keep an env's episodes that end before the
    slowest env's first one), applied to the same rollouts, keeps shorter ones."""
    import gymnasium as gym

    from pipelines.rl import envs as rl_envs
    from pipelines.rl.agent import Agent
    from pipelines.rl.collector import Collector

    gym.register("adamlab-test/Geometric-v0", entry_point=GeometricEpisodes)
    envs = rl_envs.make("adamlab-test/Geometric-v0", 8)
    agent = Agent(envs.single_observation_space, envs.single_action_space, (8,), critic=False)
    collector = Collector(envs, gamma=0.99, seed=0)
    kept, old_rule = [], []
    for _ in range(60):
        rollout = collector.episodes_per_env(agent, torch.Generator().manual_seed(0))
        kept += kept_lengths(rollout)
        first_ends = [int(torch.nonzero(rollout.dones[:, n]).flatten()[0]) for n in range(8)]
        cutoff = max(first_ends)
        for n in range(8):
            ends = [e for e in torch.nonzero(rollout.dones[:, n]).flatten().tolist()
                    if e <= cutoff]
            old_rule += list(np.diff([-1, *ends]))
    envs.close()
    se = 20.0 / math.sqrt(len(kept))
    assert abs(np.mean(kept) - 20.0) < 4 * se, (np.mean(kept), len(kept))
    assert np.mean(old_rule) < 20.0 - 4 * 20.0 / math.sqrt(len(old_rule)), np.mean(old_rule)
