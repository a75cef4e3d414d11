"""`adamlab eval` on an MLIP run: the summary's val/test errors back exactly, then any
extxyz file (here the run's own test frames, written out: the same errors again)."""

import json

import ase.io
import pytest
from runs import config, overrides

from pipelines import evaluate
from pipelines.harness.errors import ConfigError
from pipelines.mlip.pipeline import MLIPPipeline
from pipelines.train import run


@pytest.fixture(scope="module")
def mlip_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("mlip")
    cfg = config(*overrides("mlip", run_dir))
    run(cfg, run_dir)
    return run_dir, cfg


def test_eval_reproduces_the_summary_and_scores_a_file(mlip_run):
    run_dir, cfg = mlip_run
    summary = json.loads((run_dir / "summary.json").read_text())["metrics"]
    result = evaluate.evaluate(str(run_dir), [])
    scored = [k for k in result["metrics"] if k in summary]
    assert {"val_force_mae_mev_per_ang", "test_energy_mae_mev_per_atom",
            "test_force_mae_mev_per_ang"} <= set(scored)
    for key in scored:
        assert result["metrics"][key] == summary[key], key
    assert {p.name for p in (run_dir / "eval").glob("*.png")} >= {"parity_energy.png",
                                                                   "parity_forces.png"}
    _, dm = MLIPPipeline().build(cfg)  # the run's test frames, as a user's extxyz file
    path = run_dir / "frames.xyz"
    ase.io.write(path, dm.test_structures, format="extxyz")
    on_file = evaluate.evaluate(str(run_dir), [f"file={path}"])
    assert on_file["n_structures"] == len(dm.test_structures)
    assert on_file["metrics"]["test_force_mae_mev_per_ang"] == pytest.approx(
        summary["test_force_mae_mev_per_ang"], rel=1e-5)  # extxyz keeps ~16 digits


def test_eval_bad_options(mlip_run):
    run_dir, _ = mlip_run
    with pytest.raises(ConfigError, match="^file"):
        evaluate.evaluate(str(run_dir), [f"file={run_dir / 'missing.xyz'}"])
    with pytest.raises(ConfigError, match="^episodes"):
        evaluate.evaluate(str(run_dir), ["episodes=3"])
