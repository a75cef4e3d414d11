"""The studies end to end through `adamlab study` on tiny budgets: the run directory holds its
files, every report table is results.csv's numbers, the protocol is kept (each tuned arm its
own pick, tuning and report seeds disjoint, every declared check evaluated on data). No test
here asserts a verdict: the verdicts are what the data say."""

from __future__ import annotations

import csv
import json
import math
import re

import numpy as np
import pytest
from omegaconf import OmegaConf

from pipelines import study
from pipelines.harness.errors import ConfigError
from pipelines.studies import STUDIES
from pipelines.studies.engine import runner
from pipelines.studies.engine.verdict import VERDICTS

SMALL_LR = "{low: 0.01, high: 0.3, num: 2}"
TINY = {
    "saddle": ["study.quick.seeds={report: 2, tuning: 1}", "study.quick.steps=300",
               "study.settle=20",
               "study.quick.deltas=[0.0,1e-8,1e-4]", "study.quick.problems=[{d: 2, k: 1}]",
               f"study.quick.grid.lr={SMALL_LR}", "~study.quick.grid.beta",
               "+study.quick.grid.beta=[0.9]"],
    "clip": ["study.quick.seeds={report: 2, tuning: 1}", "study.quick.steps=60",
             "study.quick.moment_steps=40",
             "study.quick.grid.lr={low: 0.003, high: 0.03, num: 2}", "~study.quick.grid.clip",
             "+study.quick.grid.clip=[1.0, 10.0]"],
    "overfit": ["study.quick.seeds={report: 2, tuning: 1}", "study.quick.n_trains=[128]",
                "study.quick.n_val=64", "study.quick.n_test=64", "study.quick.epochs=1",
                "study.quick.evals=1", "study.quick.wilson_steps=50", "study.wilson.n=10",
                "~study.quick.grid",
                "+study.quick.grid={sgd_lr: [0.03], adam_lr: [0.001], wd: [0.0]}",
                "~study.arms.gd.tune.lr", "+study.arms.gd.tune.lr=[0.1, 0.3]",
                "~study.arms.adam_full_batch.tune.lr",
                "+study.arms.adam_full_batch.tune.lr=[0.01]"],
    "valley": ["study.quick.seeds={report: 2, tuning: 1}", "study.quick.steps=150",
               "study.quick.kappas=[10, 100]", "study.rosenbrock.nd=3", "~study.quick.grid",
               "+study.quick.grid={lr: [0.01, 0.1], beta: [0.9]}"],
    "ridge": ["study.quick.seeds={report: 2, tuning: 0}", "study.quick.steps=200",
              "study.quick.grid={lr: [0.1], beta1: [0.5], beta2: [0.99]}"],
    "sparse": ["study.quick.seeds={report: 2, tuning: 1}", "study.quick.stream_steps=200",
               "study.quick.horizon=200", "study.spike_at=50", "study.evaluations=20",
               "study.quick.learn_steps=50", "study.eval_samples=100", "~study.quick.grid",
               "+study.quick.grid={lr: [0.01]}"],
    "amsgrad": ["study.quick.seeds={report: 2, tuning: 1}", "study.quick.reddi_steps=100",
                "study.quick.synthetic_steps=200", "study.quick.phase_steps=[50,100,10]",
                "~study.quick.grid", "+study.quick.grid={alpha: [0.1]}"],
    "adamw": ["study.quick.seeds={report: 2, tuning: 1}", "study.quick.steps=100",
              "study.quick.n_train=128", "study.quick.n_val=64", "study.quick.n_test=64",
              "study.quick.epochs=1", "study.quick.grid={lr: [0.001], lambda_norm: [0.1]}"],
    "cyclic": ["study.quick.seeds={report: 2, tuning: 1}", "study.quick.n_train=256",
               "study.quick.n_val=64", "study.quick.n_test=64", "study.quick.epochs=1",
               "study.quick.evals=2", "study.quick.cycles=1", "study.quick.target=0.5",
               "~study.quick.grid", "+study.quick.grid={lr: [0.003]}"],
    "robust": ["study.quick.seeds={report: 2, tuning: 1}", "study.quick.steps=50",
               "study.n=200", "study.quick.contamination=[0.0, 0.3]", "~study.quick.grid",
               "+study.quick.grid={lr: [0.01]}"],
}
DOMAIN_STUDIES = ("rl", "mlip", "gnn")  # end to end in tests/test_studies_domains.py


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")


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


def as_value(text: str):
    return float(text) if re.fullmatch(r"-?[\d.]+(e[-+]?\d+)?|inf|nan", text) else text


def assert_matches_csv(table: list[list[str]], results: list[dict]):
    """Every cell: mean [t-CI] (or the median and count where runs diverged) of the rows of
    results.csv whose key columns hold the cell's keys."""
    from scipy import stats as sp

    header, body = table[0], table[1:]
    n_col = header.index("n")
    keys, metrics = header[:n_col], header[n_col + 1:]
    assert body, "empty table"
    for cells in body:
        rows = [r for r in results if all(
            r[k] == v or (as_value(r[k]) == as_value(v) if r[k] else False)
            for k, v in zip(keys, cells))]
        assert len(rows) == int(cells[n_col]), (keys, cells)
        for metric, text in zip(metrics, cells[n_col + 1:]):
            values = np.array([float(r[metric]) for r in rows if r.get(metric, "") != ""])
            if text == "-":  # missing in every row
                assert len(values) == 0, (metric, cells)
                continue
            if "diverged" in text:
                failed = int(re.search(r"\((\d+)/\d+ diverged\)", text).group(1))
                assert failed == int(np.sum(~np.isfinite(values))), (metric, cells)
                continue
            mean_text = text.split(" [")[0]
            if np.isnan(values).all():
                assert mean_text == "nan"
                continue
            assert float(mean_text) == pytest.approx(np.nanmean(values), rel=1e-3, abs=1e-12)
            if len(values) > 1 and "[" in text:
                lo = float(text.split("[")[1].split(",")[0])
                half = sp.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(
                    len(values))
                assert lo == pytest.approx(values.mean() - half, rel=1e-3, abs=1e-9)


def check_study_run(out):
    """The run dir holds its files and real PNGs, every report table matches results.csv,
    the verdict is one of the four, every check evaluated; returns (figures, results,
    summary)."""
    for f in ("report.md", "results.csv", "summary.csv", "summary.json", "config.yaml"):
        assert (out / f).is_file(), f
    text = (out / "report.md").read_text()
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert figures
    for fig in figures:
        assert (out / fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", fig
    with (out / "results.csv").open() as f:
        results = list(csv.DictReader(f))
    for table in report_tables(text):
        assert_matches_csv(table, results)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["verdict"] in VERDICTS
    assert summary["checks"][0]["role"] == "primary"
    for c in summary["checks"]:
        assert c["outcome"] in ("supported", "contradicted", "inconclusive")
        assert "no data" not in c["evidence"], c["id"]  # every check found its rows
        assert c["criterion"] in text  # printed next to its result
    assert not set(summary["seeds"]["tuning"]) & set(summary["seeds"]["report"])
    assert f"**Verdict: {summary['verdict']}.**" in text
    check_protocol_kept(out, results, summary)
    return figures, results, summary


def check_protocol_kept(out, results, summary):
    """Every arm declared with a tune block got its own pick of every axis it declared,
    from the values it tried; tuning ran on the tuning seeds only and the report on the
    report seeds only."""
    full = OmegaConf.load(out / "config.yaml")
    cfg = full.study
    picks = summary["tuning"]["picks"]
    used = (cfg.get(full.get("size", "")) or {}).get("arms_used")  # a size may run a subset
    for arm, spec in (cfg.get("arms") or {}).items():
        if used is not None and arm not in used:
            assert not [pk for pk in picks if pk["arm"] == arm], arm  # nor results for it
            continue
        tuned = sorted((spec.get("tune") or {}).keys())
        mine = [pk for pk in picks if pk["arm"] == arm]
        if not tuned:
            assert all(not pk["tuned"] for pk in mine), arm
            continue
        assert mine, f"arm {arm} declares a tune block but got no pick"
        for pk in mine:
            assert pk["tuned"] and sorted(pk["chosen"]) == tuned, pk
            for name, value in pk["chosen"].items():
                assert value in pk["axes"][name], (arm, name)
    report_seeds = set(summary["seeds"]["report"])
    seen = {int(float(r["seed"])) for r in results if r.get("seed", "") != ""}
    assert seen <= report_seeds, seen - report_seeds
    if (out / "tuning.csv").is_file():
        with (out / "tuning.csv").open() as f:
            tuning = {int(float(r["seed"])) for r in csv.DictReader(f) if r.get("seed")}
        assert tuning <= set(summary["seeds"]["tuning"]), tuning


@pytest.mark.parametrize("name", [n for n in STUDIES if n not in DOMAIN_STUDIES])
def test_study_end_to_end(name, tmp_path):
    run_study(name, tmp_path)
    check_study_run(tmp_path)


def test_saddle_protocol_every_optimizer_its_own_tuned_lr(tmp_path):
    """The protocol, not the verdict: each optimizer and problem got its own pick from its
    own grid, on the tuning seeds, interior to the grid (or flagged), and the tuning rows
    hold only tuning seeds."""
    run_study("saddle", tmp_path, "study.quick.grid.lr={low: 0.03, high: 0.9, num: 3}")
    summary = json.loads((tmp_path / "summary.json").read_text())
    picks = summary["tuning"]["picks"]
    assert sorted(pk["arm"] for pk in picks) == ["adam", "gd", "momentum"]
    for pk in picks:
        assert pk["tuned"] and "lr" in pk["chosen"]
        lr = pk["chosen"]["lr"]
        edge = lr in (min(pk["axes"]["lr"]), max(pk["axes"]["lr"]))
        assert not edge or "lr" in pk["at_edge"], pk  # an edge pick is always flagged
    with (tmp_path / "tuning.csv").open() as f:
        tuning_seeds = {int(r["seed"]) for r in csv.DictReader(f)}
    assert tuning_seeds == set(summary["seeds"]["tuning"])
    with (tmp_path / "results.csv").open() as f:
        assert {int(r["seed"]) for r in csv.DictReader(f)} == set(summary["seeds"]["report"])


def test_wandb_offline_run_in_the_run_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_study("saddle", tmp_path)
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


def test_a_bad_check_fails_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        run_study("saddle", tmp_path, "study.checks.primary.test=bigger")
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "adamlab study: error: study.checks.primary.test='bigger' is invalid" in err
    assert "Traceback" not in err
    assert not (tmp_path / "results.csv").exists()
