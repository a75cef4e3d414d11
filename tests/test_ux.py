"""What a user sees: start-up imports, the end-of-run table, progress lines, run dirs, the
monitored metric (best checkpoint, early stopping, a sweeper's objective), loggers, compile."""

import json
import subprocess
import sys

import pytest
import torch
from runs import ADAMLAB, config, env, overrides

from pipelines.harness import progress, report
from pipelines.harness.errors import ConfigError
from pipelines.harness.run_dir import unique_dir
from pipelines.harness.validation import monitor_of, validate_common
from pipelines.train import run

HEAVY = ("torch", "lightning", "wandb", "matplotlib", "torch_geometric", "ase", "gymnasium")


def imported_after(code: str) -> set[str]:
    probe = f"import sys\n{code}\nprint(' '.join(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True, timeout=600)
    return {name.split(".")[0] for name in done.stdout.split()}


def test_cli_and_train_app_import_nothing_heavy():
    """`adamlab --help`, `study --list` and composing a config pay for no heavy import."""
    assert not imported_after("import pipelines.cli") & {*HEAVY, "hydra"}
    assert not imported_after("import pipelines.train") & set(HEAVY)
    listed = imported_after("from pipelines.cli import main\nmain(['study', '--list'])")
    assert not listed & {*HEAVY, "hydra"}


def test_a_gnn_run_imports_no_other_pipelines_libraries():
    loaded = imported_after("from pipelines import registry\nregistry.get('gnn')")
    assert "torch_geometric" in loaded and not loaded & {"ase", "gymnasium", "wandb"}


def test_units_follow_metric_names():
    assert report.unit("test_acc") == "fraction"
    assert report.unit("test_energy_mae_mev_per_atom") == "meV/atom"
    assert report.unit("test_force_mae_mev_per_ang") == "meV/Å"
    assert report.unit("best_epoch") == "epoch"
    assert report.unit("steps_to_threshold") == "env steps"
    assert report.unit("structures_per_s") == "1/s"


def test_end_of_run_table_then_paths(tmp_path):
    metrics = {"val_acc": 0.81234, "test_acc": 0.8, "best_epoch": 57, "eval_return": None,
               "test_acc_by_degree": {"le5_gt5": []}}
    wandb = tmp_path / "wandb" / "offline-run-20260101_000000-abc"
    text = report.end_of_run("gnn", metrics, 12.34, tmp_path, tmp_path / "summary.json",
                             [str(tmp_path / "a.png")], str(wandb), terminal=False)
    lines = text.splitlines()
    table = lines.index("gnn results")
    assert lines[table + 1].split() == ["metric", "value", "unit"]
    assert lines[table + 2].split() == ["val_acc", "0.8123", "fraction"]
    assert lines[table + 4].split() == ["best_epoch", "57", "epoch"]
    assert lines[table + 5].split() == ["eval_return", "-", "episode", "return"]
    assert lines[table + 6].split() == ["wall_time_s", "12.3", "s"]
    assert "test_acc_by_degree" in lines[table + 7]
    assert lines[table + 8] == f"run dir:  {tmp_path}"
    assert lines[-1].endswith(f"`wandb sync {wandb}`)")


def test_epoch_lines_cap_a_long_run():
    lines = progress.EpochLines(max_lines=20)
    shown = [e for e in range(1000) if lines._due(e, 1000)]
    assert shown[0] == 0 and shown[-1] == 999 and len(shown) <= 21
    assert [e for e in range(7) if lines._due(e, 7)] == list(range(7))


def test_two_runs_in_the_same_second_get_two_dirs(tmp_path):
    base = str(tmp_path / "gnn" / "2026-01-01_00-00-00")
    first = unique_dir(base)
    assert unique_dir(base) == first == base  # the same process asking again
    subprocess.run([sys.executable, "-c", "from pipelines.harness.run_dir import unique_dir; "
                    f"print(unique_dir({base!r}))"], check=True, timeout=60)
    other = subprocess.run([sys.executable, "-c", "from pipelines.harness.run_dir import "
                            f"unique_dir; print(unique_dir({base!r}))"], capture_output=True,
                           text=True, check=True, timeout=60).stdout.strip()
    assert other == base + "_2"


def test_monitor_comes_from_the_config():
    cfg = config("pipeline=gnn")
    assert monitor_of(cfg) == ("val_acc", "max")
    assert monitor_of(config("pipeline=mlip")) == ("val_force_mae_mev_per_ang", "min")
    assert monitor_of(config("pipeline=mlip", "pipeline.monitor=val_energy_mae_mev_per_atom")
                      ) == ("val_energy_mae_mev_per_atom", "min")
    assert monitor_of(config("pipeline=rl")) == (None, "min")  # no per-epoch validation
    with pytest.raises(ConfigError, match="pipeline.monitor_mode"):
        monitor_of(config("pipeline=gnn", "pipeline.monitor_mode=best"))
    with pytest.raises(ConfigError, match="callbacks.early_stopping.patience"):
        validate_common(config("pipeline=gnn", "pipeline.monitor=null",
                               "callbacks.early_stopping.patience=3"))
    with pytest.raises(ConfigError, match="compile"):
        validate_common(config("pipeline=gnn", "compile=fast"))


def test_early_stopping_tensorboard_and_the_objective(tmp_path):
    """patience 2 with an improvement nobody reaches (min_delta 1) stops after 3 epochs; the
    objective is the best monitored value (the summary's val_acc); TensorBoard gets events."""
    cfg = config(*overrides("gnn", tmp_path, "callbacks.early_stopping.patience=2",
                            "callbacks.early_stopping.min_delta=1.0", "logger=tensorboard"))
    metrics = run(cfg, tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    rows = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    epochs = {r.split(",")[header.index("epoch")] for r in rows[1:]
              if r.split(",")[header.index("val_acc")]}
    assert len(epochs) == 3  # of trainer.max_epochs=12
    assert metrics.objective == pytest.approx(summary["metrics"]["val_acc"], abs=1e-6)
    assert summary["objective"] == {"metric": "val_acc", "mode": "max",
                                    "best": metrics.objective}
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert not (tmp_path / "wandb").exists()


def test_compile_compiles_the_module(tmp_path):
    """compile={backend: aot_eager} goes through torch.compile (dynamo captures the model's
    graph) and trains to the same metrics as eager, within float reordering."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    eager = run(config(*overrides("gnn", tmp_path / "eager")), tmp_path / "eager")
    compiled = run(config(*overrides("gnn", tmp_path / "c"), "compile={backend:aot_eager}"),
                   tmp_path / "c")
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1
    assert compiled["val_acc"] == pytest.approx(eager["val_acc"], abs=0.02)


def test_piped_train_prints_epoch_lines_and_the_table(tmp_path):
    done = subprocess.run([ADAMLAB, "train", *overrides("gnn", tmp_path)[:-2],
                           "logger=csv", "trainer.max_epochs=40", f"hydra.run.dir={tmp_path}"],
                          env=env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    epochs = [line for line in done.stdout.splitlines() if line.startswith("epoch ")]
    assert 2 <= len(epochs) <= 21 and epochs[-1].startswith("epoch 40/40")
    assert "val_acc" in epochs[-1] and "v_num" not in done.stdout
    assert "gnn results" in done.stdout and "\r" not in done.stdout + done.stderr


def test_progress_shows_the_monitor_and_drops_v_num():
    from types import SimpleNamespace

    trainer = SimpleNamespace(progress_bar_metrics={"v_num": 3, "train_loss": 0.5},
                              callback_metrics={"val_force_mae_mev_per_ang": torch.tensor(81.)})
    assert progress.shown(trainer, "val_force_mae_mev_per_ang") == {
        "train_loss": 0.5, "val_force_mae_mev_per_ang": 81.0}
    assert progress.shown(trainer) == {"train_loss": 0.5}
