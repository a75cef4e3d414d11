"""Bad input across config, data files, checkpoints, envs and the filesystem: each case stops
before any work with one message naming the key or file, the value and what is allowed
(docs/errors.md lists them).

The table runs in-process (the validation the command runs, raising the error the command
prints); a few cases, one per kind of path to the message, run as real `adamlab train`
processes to check the exit status, the one-line message and that no traceback is printed.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from runs import config, overrides, train

from pipelines.harness.errors import UserError
from pipelines.train import run

pytestmark = pytest.mark.usefixtures("one_thread")


class Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('ran')",)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The files the cases name: a real GNN checkpoint and broken or foreign ones."""
    root = tmp_path_factory.mktemp("bad-input")
    run(config(*overrides("gnn", root, "trainer.max_epochs=2")), root / "gnn")
    good = root / "gnn" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(good, weights_only=True)
    made = {"gnn_ckpt": good, "marker": root / "payload-ran"}

    def save(name, obj):
        torch.save(obj, root / name)
        made[name.split(".")[0]] = root / name

    (root / "truncated.ckpt").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    made["truncated"] = root / "truncated.ckpt"
    (root / "random.ckpt").write_bytes(os.urandom(4096))
    made["random"] = root / "random.ckpt"
    (root / "empty.ckpt").write_bytes(b"")
    made["empty"] = root / "empty.ckpt"
    save("tensor.ckpt", torch.zeros(3))
    save("foreign.ckpt", {k: v for k, v in ckpt.items() if k != "adamlab"})
    save("newer.ckpt", {**ckpt, "adamlab": {**ckpt["adamlab"], "schema": 99}})
    save("other_pipeline.ckpt", {**ckpt, "adamlab": {**ckpt["adamlab"], "pipeline": "mlip"}})
    save("crafted.ckpt", {**ckpt, "evil": Payload(str(made["marker"]))})
    (root / "no_checkpoints").mkdir()
    made["no_checkpoints"] = root / "no_checkpoints"
    (root / "a_file").write_text("not a directory")
    made["a_file"] = root / "a_file"
    (root / "xyz_dir").mkdir()
    made["xyz_dir"] = root / "xyz_dir"
    (root / "run_with_file_checkpoints").mkdir()
    (root / "run_with_file_checkpoints" / "checkpoints").write_text("a file")
    made["run_with_file_checkpoints"] = root / "run_with_file_checkpoints"
    return made


GNN, MLIP, RL = "gnn", "mlip", "rl"
# (id, pipeline, overrides, run dir or None, what the message must name)
CASES = [
    # ---- config: harness keys
    ("seed-text", GNN, ["seed=abc"], None, ["seed='abc'", "an integer >= 0"]),
    ("seed-negative", GNN, ["seed=-1"], None, ["seed=-1", "an integer >= 0"]),
    ("seed-float", GNN, ["seed=1.5"], None, ["seed=1.5", "an integer"]),
    ("telemetry", GNN, ["telemetry_every=-1"], None, ["telemetry_every=-1", ">= 0"]),
    ("every-word", GNN, ["checkpoint_every=often"], None, ["checkpoint_every='often'", "steps"]),
    ("every-zero", GNN, ["checkpoint_every=0"], None, ["checkpoint_every=0", "above zero"]),
    ("every-unit", GNN, ["checkpoint_every=10parsecs"], None, ["'10parsecs'", "'30 s'"]),
    ("every-fraction", GNN, ["checkpoint_every=1.5steps"], None, ["'1.5steps'", "whole"]),
    ("requeues", GNN, ["max_requeues=-1"], None, ["max_requeues=-1", ">= 0"]),
    ("nonfinite-action", GNN, ["nonfinite.action=ignore"], None,
     ["nonfinite.action='ignore'", "error or skip"]),
    ("nonfinite-cap", GNN, ["nonfinite.max_consecutive=0"], None,
     ["nonfinite.max_consecutive=0", ">= 1"]),
    ("accept-not-list", GNN, ["resume_accept_changes=optim.lr"], None,
     ["resume_accept_changes='optim.lr'", "a list of config keys"]),
    ("ema", GNN, ["ema_decay=1.5"], None, ["ema_decay=1.5", "(0, 1)"]),
    ("accelerator", GNN, ["trainer.accelerator=tpu"], None,
     ["trainer.accelerator='tpu'", "cpu, gpu"]),
    ("precision", GNN, ["trainer.precision=8-bit"], None, ["trainer.precision='8-bit'", "32-true"]),
    ("strategy", GNN, ["trainer.strategy=horovod"], None, ["trainer.strategy='horovod'", "ddp"]),
    ("devices", GNN, ["trainer.devices=0"], None, ["trainer.devices=0", ">= 1"]),
    ("num-nodes", GNN, ["trainer.num_nodes=0"], None, ["trainer.num_nodes=0", ">= 1"]),
    ("max-epochs", GNN, ["trainer.max_epochs=0"], None, ["trainer.max_epochs=0", ">= 1"]),
    ("log-every", GNN, ["trainer.log_every_n_steps=0"], None,
     ["trainer.log_every_n_steps=0", ">= 1"]),
    ("ddp-full-batch", GNN, ["trainer.devices=2"], None, ["trainer.devices=2", "full-batch"]),
    ("pipeline", GNN, ["pipeline.name=vision"], None, ["pipeline.name='vision'", "gnn, mlip, rl"]),
    # ---- config: optimizer, clipping, schedule
    ("lr", GNN, ["optim.lr=-0.1"], None, ["optim.lr=-0.1", "expected"]),
    ("optim-name", GNN, ["optim.name=adamm"], None, ["optim.name='adamm'", "adamw"]),
    ("betas", GNN, ["optim.betas=[0.9,1.5]"], None, ["betas", "expected"]),
    ("clip-kind", GNN, ["clip=grad_norm", "clip.kind=median"], None, ["median", "expected"]),
    ("clip-at", GNN, ["clip=grad_norm", "clip.at=moments"], None, ["moments", "expected"]),
    ("schedule-mode", GNN, ["schedule=cyclical", "schedule.mode=sawtooth"], None,
     ["sawtooth", "expected"]),
    ("schedule-name", GNN, ["schedule.name=zigzag"], None, ["schedule.name='zigzag'", "cosine"]),
    # ---- config: pipelines
    ("gnn-model", GNN, ["model.name=transformer"], None, ["model.name='transformer'", "gcn"]),
    ("gnn-dropout", GNN, ["model.dropout=1.5"], None, ["model.dropout=1.5", "[0, 1)"]),
    ("gnn-exponent", GNN, ["data.exponent=1.5"], None, ["exponent=1.5", "must be > 2"]),
    ("mlip-cutoff", MLIP, ["model.cutoff=0"], None, ["model.cutoff=0", "> 0"]),
    ("mlip-batch", MLIP, ["pipeline.batch_size=0"], None, ["pipeline.batch_size=0", ">= 1"]),
    ("mlip-element", MLIP, ["data.element=Fe"], None, ["data.element='Fe'", "fcc"]),
    ("mlip-dtype", MLIP, ["pipeline.dtype=float16"], None, ["pipeline.dtype='float16'",
                                                             "float32"]),
    # ---- data files
    ("planetoid-missing", GNN, ["data=cora", "data.raw_dir=/nonexistent",
                                "data.download=false", "data.root=/tmp/adamlab-no-planetoid"],
     None, ["data.", "Cora", "not found in", "Fix: put them in"]),
    ("xyz-missing", MLIP, ["data=extxyz", "data.train=/nonexistent/train.xyz"], None,
     ["data.train='/nonexistent/train.xyz'", "an existing file"]),
    ("xyz-unset", MLIP, ["data=extxyz"], None, ["data.train", "training file"]),
    ("xyz-directory", MLIP, ["data=extxyz", "data.train={xyz_dir}"], None,
     ["data.train=", "an existing file"]),
    ("xyz-test-missing", MLIP, ["data=extxyz", "data.train={a_file}",
                                "data.test=/nonexistent/test.xyz"], None,
     ["data.test='/nonexistent/test.xyz'", "an existing file"]),
    ("db-missing", MLIP, ["data=ase_db", "data.train=/nonexistent/train.db"], None,
     ["data.train='/nonexistent/train.db'", "an existing file"]),
    # ---- envs
    ("env-id", RL, ["env.id=NoSuchEnv-v0"], None, ["env.id='NoSuchEnv-v0'", "registered"]),
    ("env-count", RL, ["env.num_envs=0"], None, ["env.num_envs=0", ">= 1"]),
    ("env-vector", RL, ["env.vector=threads"], None, ["env.vector='threads'", "sync"]),
    ("env-kwargs", RL, ["+env.kwargs.bogus=1"], None, ["env.kwargs", "bogus"]),
    ("env-obs", RL, ["env.id=Blackjack-v1"], None, ["env.id='Blackjack-v1'", "Box observations"]),
    ("env-budget", RL, ["pipeline.total_timesteps=10"], None,
     ["pipeline.total_timesteps=10", "an integer >="]),
    ("env-minibatch", RL, ["algo.minibatch_size=100000"], None,
     ["algo.minibatch_size=100000", "at most"]),
    # ---- checkpoints
    ("resume-missing", GNN, ["resume=/nonexistent/run"], None,
     ["resume='/nonexistent/run'", "a .ckpt file or a run directory"]),
    ("resume-missing-file", GNN, ["resume=/nonexistent/last.ckpt"], None,
     ["/nonexistent/last.ckpt: no such file", "adamlab checkpoint"]),
    ("resume-truncated", GNN, ["resume={truncated}"], None, ["truncated.ckpt", "truncated"]),
    ("resume-random", GNN, ["resume={random}"], None, ["random.ckpt", "not a torch checkpoint"]),
    ("resume-empty", GNN, ["resume={empty}"], None, ["empty.ckpt: empty file"]),
    ("resume-tensor", GNN, ["resume={tensor}"], None, ["tensor.ckpt", "not a checkpoint dict"]),
    ("resume-foreign", GNN, ["resume={foreign}"], None,
     ["foreign.ckpt", "not written by `adamlab train`"]),
    ("resume-newer", GNN, ["resume={newer}"], None, ["newer.ckpt", "schema 99", "newer adamlab"]),
    ("resume-pipeline", GNN, ["resume={other_pipeline}"], None,
     ["other_pipeline.ckpt", "pipeline=mlip, not pipeline=gnn"]),
    ("resume-config", GNN, ["resume={gnn_ckpt}", "model.hidden=16"], None,
     ["last.ckpt", "model.hidden: 8 -> 16", "resume_accept_changes=[model.hidden]"]),
    ("resume-crafted", GNN, ["resume={crafted}"], None, ["crafted.ckpt", "refused to unpickle"]),
    ("resume-empty-dir", GNN, ["resume={no_checkpoints}"], None,
     ["no_checkpoints: holds no checkpoint that loads", "resume"]),
    # ---- filesystem
    ("run-dir-under-file", GNN, [], "{a_file}/run", ["a_file/run", "cannot be used",
                                                     "writ"]),
    ("run-dir-is-file", GNN, [], "{a_file}", ["a_file", "cannot be used"]),
    ("checkpoints-is-file", GNN, [], "{run_with_file_checkpoints}",
     ["run_with_file_checkpoints/checkpoints", "cannot be used"]),
]


def _fill(text: str, files: dict) -> str:
    return text.format(**{k: str(v) for k, v in files.items()})


def _args(pipeline: str, tmp_path: Path, args: list[str]) -> list[str]:
    """The tiny run's overrides and the case's; another data group drops the tiny data keys."""
    base = overrides(pipeline, tmp_path, *args)
    if any(a.startswith("data=") for a in args):
        base = [a for a in base if not a.lstrip("+").startswith("data.") or a in args]
    return base


@pytest.mark.parametrize("case, pipeline, args, run_dir, names", CASES,
                         ids=[c[0] for c in CASES])
def test_bad_input_stops_before_any_work(files, tmp_path, case, pipeline, args, run_dir, names):
    args = [_fill(a, files) for a in args]
    target = Path(_fill(run_dir, files)) if run_dir else tmp_path / "run"
    with pytest.raises(UserError) as error:
        run(config(*_args(pipeline, tmp_path, args)), target)
    message = str(error.value)
    for name in names:  # the key or file, the value, what is allowed
        assert _fill(name, files) in message, message
    assert not (target / "config.yaml").exists() and not (tmp_path / "emt-cache").exists()
    assert not files["marker"].exists()


def test_the_table_covers_forty_cases_of_every_kind():
    assert len(CASES) >= 40
    kinds = {"config": 0, "data": 0, "checkpoint": 0, "env": 0, "filesystem": 0}
    for case, *_ in CASES:
        kind = ("checkpoint" if case.startswith("resume") else "env" if case.startswith("env")
                else "data" if case.split("-")[0] in ("planetoid", "xyz", "db")
                else "filesystem" if "dir" in case or "checkpoints" in case else "config")
        kinds[kind] += 1
    assert min(kinds.values()) >= 3, kinds


# one real process per path the message takes: harness config, Hydra composition, checkpoint,
# run dir (Hydra callback), data file
CLI = [
    (["seed=abc"], 2, "seed='abc' is invalid: expected an integer >= 0"),
    (["optim=adamm"], 1, "Could not find 'optim/adamm'"),
    (["resume={truncated}"], 2, "truncated.ckpt: truncated or not a torch checkpoint"),
    (["hydra.run.dir={a_file}/run"], 2, "hydra.run.dir="),
    (["pipeline=mlip", "data=extxyz", "data.train=/nonexistent/train.xyz"], 2,
     "data.train='/nonexistent/train.xyz' is invalid"),
]


@pytest.mark.parametrize("args, status, message", CLI, ids=[c[2][:30] for c in CLI])
def test_the_command_prints_one_line_and_exits_non_zero(files, tmp_path, args, status, message):
    args = [_fill(a, files) for a in args]
    run_dir = tmp_path / "run"
    if any(a.startswith("hydra.run.dir=") for a in args):
        done = train(Path(args[-1].split("=", 1)[1]), args[:-1])
    else:
        done = train(run_dir, [*args, "trainer.max_epochs=1", "logger=csv"])
    assert done.returncode == status, done.stderr[-2000:]
    assert _fill(message, files) in done.stderr
    assert "Traceback" not in done.stderr and "Error executing job" not in done.stderr
    assert not (run_dir / "config.yaml").exists()
    shutil.rmtree(run_dir, ignore_errors=True)


def test_docs_list_every_case():
    """docs/errors.md lists each case of the table next to the error format."""
    doc = (Path(__file__).resolve().parent.parent / "docs" / "errors.md").read_text()
    listed = {line.split("|")[1].strip() for line in doc.splitlines() if line.startswith("| ")}
    assert "<key>=<value> is invalid: expected <what is allowed>" in doc
    assert [c[0] for c in CASES if c[0] not in listed] == []
