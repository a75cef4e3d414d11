"""The studies: each runs end to end through `adamlab study` on a tiny budget, its report's
numbers are the CSV's, and the analytic facts behind three studies hold exactly."""

from __future__ import annotations

import csv
import json
import math
import re

import pytest
import torch
from omegaconf import OmegaConf

from pipelines import study
from pipelines.harness.errors import ConfigError
from pipelines.studies import STUDIES, amsgrad, ridge, runner, saddle

TINY = {
    "valley": ["study.quick.seeds=2", "study.quick.steps=200", "study.quick.kappas=[10,100]",
               "study.quick.lrs=[0.01,0.1]"],
    "saddle": ["study.quick.seeds=2", "study.quick.steps=100",
               "study.quick.deltas=[0.0,1e-4,1e-2]", "study.quick.problems=[{d:2,k:1}]"],
    "ridge": ["study.quick.seeds=2", "study.quick.steps=200",
              "study.quick.grid={lr:[0.1],beta1:[0.9],beta2:[0.999]}"],
    "overfit": ["study.quick.seeds=2", "study.quick.epochs=2", "study.n_train=64",
                "study.n_val=64", "study.width=4", "study.optimizers.adam.lrs=[0.001]",
                "study.optimizers.sgd_momentum.lrs=[0.03]"],
    "sparse": ["study.quick.seeds=2", "study.quick.stream_steps=200", "study.quick.horizon=200",
               "study.spike_at=50", "study.evaluations=20"],
    "amsgrad": ["study.quick.seeds=2", "study.quick.reddi_steps=100",
                "study.quick.phase_steps=[50,100,10]"],
    "adamw": ["study.quick.seeds=2", "study.quick.steps=100", "study.quick.mlp_seeds=2",
              "study.quick.epochs=2", "study.quick.weight_decays=[0.01,0.1]",
              "study.n_train=64", "study.n_val=64", "study.width=16"],
    "cyclic": ["study.quick.seeds=2", "study.quick.epochs=2", "study.quick.cycles=1",
               "study.quick.lrs=[0.003]", "study.n_train=128", "study.n_val=64"],
    "clip": ["study.quick.seeds=2", "study.quick.steps=50", "study.quick.bias_steps=30",
             "study.quick.dfs=[1.5]", "study.quick.thresholds=[1.0,10.0]"],
    "robust": ["study.quick.seeds=2", "study.quick.steps=50", "study.quick.contamination=[0.0,0.3]",
               "study.optimizers.sgd.lrs=[0.01]", "study.optimizers.adam.lrs=[0.01]"],
}


DOMAIN_STUDIES = ("rl", "mlip")  # end to end in tests/test_studies_domains.py


def test_every_study_has_a_tiny_case():
    from test_studies_domains import TINY_DOMAINS

    assert set(TINY) | set(TINY_DOMAINS) == set(STUDIES)


def run_study(name: str, run_dir, *extra: str):
    study.main([name, f"hydra.run.dir={run_dir}", *TINY[name], *extra])


def report_tables(text: str) -> list[list[list[str]]]:
    """The markdown tables of the Results section, as rows of cells (header first)."""
    results = text.split("## Results", 1)[1].split("## Figures", 1)[0]
    tables, current = [], None
    for line in results.splitlines():
        if line.startswith("|"):
            if current is None:
                current = []
                tables.append(current)
            if not set(line) <= set("|-"):
                current.append([c.strip() for c in line.strip("|").split("|")])
        else:
            current = None
    return tables


def finite_values(rows: list[dict], column: str) -> list[float]:
    values = [float(r[column]) for r in rows if r.get(column, "") != ""]
    return [v for v in values if math.isfinite(v)]


def assert_matches_csv(table: list[list[str]], results: list[dict]):
    header, body = table[0], table[1:]
    n_col = header.index("n")
    keys, metrics = header[:n_col], header[n_col + 1:]
    assert body, "empty table"
    for cells in body:
        rows = [r for r in results if all(r[k] == v for k, v in zip(keys, cells))]
        assert len(rows) == int(cells[n_col]), (keys, cells)
        for metric, text in zip(metrics, cells[n_col + 1:]):
            shown = re.sub(r"\s*\(.*\)$", "", text)
            mean_text, std_text = (s.strip() for s in shown.split("±"))
            values = finite_values(rows, metric)
            if not values:
                assert mean_text == "nan"
                continue
            mean = sum(values) / len(values)
            std = (math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
                   if len(values) > 1 else 0.0)
            assert float(mean_text) == pytest.approx(mean, rel=1e-3, abs=1e-12), (metric, cells)
            assert float(std_text) == pytest.approx(std, rel=1e-3, abs=1e-12), (metric, cells)


@pytest.mark.parametrize("name", [n for n in STUDIES if n not in DOMAIN_STUDIES])
def test_study_end_to_end(name, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    run_study(name, tmp_path)
    check_study_run(tmp_path)


def check_study_run(out):
    """The run dir holds its files and real PNGs, every report table matches results.csv,
    and the verdict is one of the three. Returns (figures, results, verdict)."""
    for f in ("report.md", "results.csv", "summary.csv", "summary.json", "config.yaml"):
        assert (out / f).is_file(), f
    text = (out / "report.md").read_text()
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert figures
    for fig in figures:
        assert (out / fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", fig
    with (out / "results.csv").open() as f:
        results = list(csv.DictReader(f))
    tables = report_tables(text)
    assert tables
    for table in tables:
        assert_matches_csv(table, results)
    verdict = re.search(r"## Verdict\n\n\*\*(.+?)\*\*: ", text)
    assert verdict and verdict.group(1) in ("supported", "mixed", "not supported")
    return figures, results, verdict.group(1)


def test_wandb_offline_run_in_the_run_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_study("amsgrad", tmp_path)
    assert list((tmp_path / "wandb").glob("offline-run-*")), "no offline W&B run"


def test_list_prints_every_study_once(capsys):
    study.main(["--list"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == list(STUDIES)


def test_unknown_study_is_refused():
    with pytest.raises(SystemExit, match="unknown study 'nope'"):
        study.main(["nope"])


def test_size_must_be_quick_or_full():
    cfg = OmegaConf.create({"name": "x", "quick": {"seeds": 1}, "full": {"seeds": 2}})
    with pytest.raises(ConfigError, match="size='huge'"):
        runner.study_params(cfg, "huge")
    assert runner.study_params(cfg, "full").seeds == 2


def test_a_setting_lives_in_one_place():
    cfg = OmegaConf.create({"name": "x", "steps": 5, "quick": {"seeds": 1, "steps": 9},
                            "full": {"seeds": 1}})
    with pytest.raises(ConfigError, match="study.steps"):
        runner.study_params(cfg, "quick")


def test_reddi_counterexample_adam_to_plus_one_amsgrad_to_minus_one():
    x0 = torch.linspace(-0.9, 0.9, 5, dtype=torch.float64)
    adam_path, adam_regret = amsgrad.reddi("adam", x0, c=3.0, alpha=0.5, steps=3000)
    ams_path, ams_regret = amsgrad.reddi("amsgrad", x0, c=3.0, alpha=0.5, steps=3000)
    assert (adam_path[-1] > 0.99).all()
    assert (ams_path[-1] < -0.98).all()
    assert (adam_regret > ams_regret).all()


@pytest.mark.parametrize("name", ["gd", "momentum", "adam"])
def test_started_exactly_at_the_saddle_nothing_moves(name):
    spec = {"gd": {"name": "sgd"}, "momentum": {"name": "sgd", "momentum": 0.9},
            "adam": {"name": "adam"}}[name]
    z0 = torch.zeros(3, 4, dtype=torch.float64)
    hit, moved, _ = saddle.escape(spec, 0.1, z0, torch.zeros(3, dtype=torch.float64), k=2,
                                  steps=500, threshold=0.5, seed=0)
    assert (moved == 0).all() and (hit == -1).all()


def test_ridge_decaying_alpha_reaches_the_closed_form():
    p = OmegaConf.create({"n": 500, "d": 50, "noise": 0.5, "lam": 1.0, "eps": 1e-8})
    base = [{"lr": 0.01, "beta1": 0.9, "beta2": 0.999}]
    err = ridge.distances(p, "cosine", base, seeds=[0, 1], steps=3000, every=3000)
    assert err[0, :, 0] == pytest.approx(1.0)
    assert (err[0, :, -1] <= 1e-6).all()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["saddle", "ridge", "sparse", "amsgrad"])
def test_quick_config_supports_the_analytic_claims(name, tmp_path, monkeypatch):
    """The quick configs of the studies whose claims are mathematical facts must find them."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    study.main([name, f"hydra.run.dir={tmp_path}"])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["verdict"] == "supported", summary["reason"]
