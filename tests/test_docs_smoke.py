"""Every `adamlab` command shown in README.md and docs/ still works.

The commands are extracted from the fenced code blocks (a trailing ``# comment`` or a run of
spaces before a description ends a command; ``\\`` continues it). Each one is
- composed by Hydra with its own overrides and validated by the harness and its pipeline
  (a sweep: the first value of every swept key), so a renamed key, group or choice fails;
- and one per pipeline is trained for real, tiny (TINY below appended), in-process; the
  `adamlab eval` commands score those runs; `--help` and `study --list` run as they are.
What cannot run here is listed in NOT_RUN with the reason, and a listed command that no
page shows any more fails the test too (nothing is skipped silently).
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser

from pipelines import cli, evaluate, registry
from pipelines.harness.validation import validate_common
from pipelines.train import CONFIGS, run

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
TINY = {
    "gnn": ["trainer.max_epochs=2"],
    "rl": ["env.num_envs=2", "algo.n_steps=32", "algo.minibatch_size=32", "algo.update_epochs=1",
           "pipeline.steps_per_epoch=64", "pipeline.total_timesteps=128",
           "pipeline.eval_every=0", "pipeline.eval_episodes=1", "pipeline.pg_grad_every=0"],
    "mlip": ["data.n_configs=24", "+data.size=[1,1,1]", "+data.snapshots_per_run=4",
             "model.hidden=8", "model.num_interactions=1", "model.num_rbf=6",
             "pipeline.batch_size=4", "trainer.max_epochs=1"],
}
QUIET = ["logger=csv", "trainer.enable_progress_bar=false", "telemetry_every=0"]
USER_FILES = "train.xyz, test.xyz and my.db stand for the user's own files"
NOT_RUN = {
    "adamlab train pipeline=mlip data=extxyz data.train=train.xyz data.test=test.xyz "
    "data.energy_key=REF_energy data.forces_key=REF_forces data.stress_key=REF_stress":
        USER_FILES,
    "adamlab train pipeline=mlip data=ase_db data.train=my.db data.energy_key=dft_energy":
        USER_FILES,
    "adamlab train -m hydra/launcher=slurm hydra.launcher.partition=gpu optim=adam,adamw "
    "seed=0,1,2": "needs sbatch; `make test-slurm` runs the Slurm launcher on a real Slurm",
    "adamlab train experiment=gcn_citeseer": "CiteSeer's raw files are not in "
                                             "../shared/data/planetoid (no network here)",
    "adamlab train experiment=gcn_pubmed": "PubMed's raw files are not in "
                                           "../shared/data/planetoid (no network here)",
    "adamlab train experiment=gat_pubmed": "PubMed's raw files are not in "
                                           "../shared/data/planetoid (no network here)",
    "adamlab report": "rewrites the committed docs/studies pages (tests/test_report.py runs "
                      "the report on a copy)",
    "adamlab report --collect runs/study": "copies full-size study runs that only a full "
                                           "study run leaves behind",
}


def commands() -> list[tuple[str, str]]:
    """(page, command) for every `adamlab` line of a fenced code block."""
    found = []
    for page in PAGES:
        for block in re.findall(r"```[a-z]*\n(.*?)```", page.read_text(), re.S):
            for line in re.sub(r"\s*\\\n\s*", " ", block).splitlines():
                line = line.strip().removeprefix("$ ")
                if not line.startswith("adamlab"):
                    continue
                command = re.split(r"\s+#|\s{2,}", line)[0].strip()
                command = " ".join(command.split())
                found.append((str(page.relative_to(ROOT)), command))
    return found


def first_of_sweeps(args: list[str]) -> list[str]:
    """A multirun's overrides with every sweep cut to its first value; Optuna's search-space
    overrides (interval/tag) and hydra.* dropped (the sweeper's own)."""
    out = []
    for override in OverridesParser.create().parse_overrides(args):
        if override.key_or_group.startswith("hydra"):
            continue
        if override.is_sweep_override():
            if "interval(" in override.input_line:
                continue
            value = next(override.sweep_string_iterator())
            out.append(f"{override.get_key_element()}={value}")
        else:
            out.append(override.input_line)
    return out


def config(overrides: list[str], name: str = "train"):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """The first training command of each pipeline shown, trained tiny (one on the
    pipeline's default data: `adamlab eval ... data.seed=7` needs a synthetic graph)."""
    runs, chosen = {}, {}
    for _, command in commands():
        args = shlex.split(command)[1:]
        if command in NOT_RUN or args[:1] != ["train"] or "-m" in args or "--help" in args:
            continue
        overrides = [a for a in args[1:] if not a.startswith("resume=")]
        cfg = config(overrides)
        default_data = cfg.get("data") is None or cfg.data.name in ("synthetic", "emt")
        name = cfg.pipeline.name
        if name not in chosen or default_data and not chosen[name][1]:
            chosen[name] = (overrides, default_data)
    for name, (overrides, _) in chosen.items():
        run_dir = tmp_path_factory.mktemp(name)
        extra = [f"data.cache_dir={run_dir / 'emt'}"] if name == "mlip" else []
        run(config([*overrides, *TINY[name], *QUIET, *extra]), run_dir)
        runs[name] = run_dir
    return runs


def check(command: str, runs: dict) -> None:
    args = shlex.split(command)[1:]
    if args[0] == "train" and "--help" in args or args[:2] == ["study", "--list"] or \
            args == ["--help"]:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out), \
                pytest.raises(SystemExit) as done:
            cli.main(args)
            raise SystemExit(0)
        assert done.value.code in (0, None) and out.getvalue()
    elif args[0] == "train":
        multirun = "-m" in args
        rest = [a for a in args[1:] if a != "-m"]
        overrides = first_of_sweeps(rest) if multirun else rest
        resume = [a for a in overrides if a.startswith("resume=")]
        overrides = [a for a in overrides if not a.startswith("resume=")]
        if resume:  # a run dir placeholder: the tiny run of that pipeline
            overrides.append(f"resume={runs[config(overrides).pipeline.name]}")
        cfg = config(overrides)
        pipeline = registry.get(cfg.pipeline.name)
        validate_common(cfg, pipeline)
        pipeline.validate(cfg)
    elif args[0] == "study":
        cfg = config([f"study={args[1]}", *args[2:]], name="study")
        assert cfg.study
    elif args[0] == "eval":
        target = args[1]
        name = target.split("/")[1] if target.startswith("runs/") else "gnn"
        evaluate.evaluate(str(runs[name]), args[2:])
    else:
        raise AssertionError(f"no check for {command!r}: add one or list it in NOT_RUN")


def test_every_documented_command_runs(tiny_runs):
    shown = commands()
    assert len(shown) >= 20, "the extractor lost the commands"
    failures = []
    for page, command in shown:
        if command in NOT_RUN:
            continue
        try:
            check(command, tiny_runs)
        except Exception as error:  # noqa: BLE001 - collect every failing command
            failures.append(f"{page}: {command}: {type(error).__name__}: {error}")
    assert not failures, "\n".join(failures)
    assert set(tiny_runs) == {"gnn", "rl", "mlip"}


def test_not_run_commands_are_still_shown_and_say_why():
    shown = {command for _, command in commands()}
    stale = [c for c in NOT_RUN if c not in shown]
    assert not stale, f"listed in NOT_RUN but on no page any more: {stale}"
    assert all(len(reason) > 20 for reason in NOT_RUN.values())
