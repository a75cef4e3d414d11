"""`adamlab eval RUN_DIR_OR_CKPT [key=value ...]`: score a trained run through its pipeline.

    adamlab eval runs/rl/<run>                         # the run's own evaluation, rerun
    adamlab eval runs/rl/<run> episodes=50 deterministic=false video=mp4
    adamlab eval runs/rl/<run>/checkpoints/last.ckpt seed=123
    adamlab eval runs/gnn/<run>                        # summary.json's metrics, recomputed
    adamlab eval runs/gnn/<run> data.seed=7            # on another graph
    adamlab eval runs/mlip/<run> data.test=other.xyz   # on another extxyz / ASE db

A run directory means its ``checkpoints/last.ckpt``; a checkpoint means the run directory it
sits in (``<run>/checkpoints/<name>.ckpt``), whose ``config.yaml`` says which pipeline built
it. The options go to that pipeline's ``evaluate``; the result is printed as JSON and written
to ``<run>/eval.json``; figures and tables go to ``<run>/eval/``. The headline metrics are
also printed as a table on stderr. Bad input exits with status 2 and a one-line message.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from omegaconf import OmegaConf

from pipelines import registry
from pipelines.harness.errors import ConfigError

USAGE = "usage: adamlab eval RUN_DIR_OR_CKPT [key=value ...]"


def locate(target: str) -> tuple[Path, Path]:
    """(run dir, checkpoint) for a run directory or a checkpoint file in one."""
    path = Path(target)
    if path.is_dir():
        run_dir, checkpoint = path, path / "checkpoints" / "last.ckpt"
    else:
        run_dir, checkpoint = path.parent.parent, path
    if not checkpoint.is_file():
        raise ConfigError("checkpoint", str(checkpoint), "a .ckpt file, or a run directory "
                          "holding checkpoints/last.ckpt")
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError("run", str(run_dir), "the run directory of the checkpoint, with its "
                          "config.yaml (a checkpoint lives in <run>/checkpoints/)")
    return run_dir, checkpoint


def evaluate(target: str, options: list[str]) -> dict:
    run_dir, checkpoint = locate(target)
    cfg = OmegaConf.load(run_dir / "config.yaml")
    score = registry.evaluator(cfg.pipeline.name)
    if score is None:
        raise ConfigError("pipeline.name", cfg.pipeline.name, "a pipeline with an evaluate "
                          f"step (adamlab eval supports: {', '.join(supported())})")
    malformed = [o for o in options if "=" not in o]
    if malformed:
        raise ConfigError("options", malformed, "key=value pairs")
    parsed = OmegaConf.to_container(OmegaConf.from_dotlist(options))
    result = score(cfg, checkpoint, run_dir, parsed)
    (run_dir / "eval.json").write_text(json.dumps(result, indent=2))
    return result


def supported() -> list[str]:
    return [name for name in registry.PIPELINES if registry.evaluator(name) is not None]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(f"{USAGE}\n\n{__doc__.split(chr(10), 2)[2]}", file=sys.stderr)
        raise SystemExit(0 if argv else 2)
    try:
        result = evaluate(argv[0], argv[1:])
    except ConfigError as error:
        print(f"adamlab eval: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(json.dumps(result, indent=2))
    if isinstance(result.get("metrics"), dict):
        from pipelines.harness.report import headline, table

        print(table(headline(result["metrics"]), f"eval of {argv[0]}", terminal=False),
              file=sys.stderr)


if __name__ == "__main__":
    main()
