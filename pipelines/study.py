"""`adamlab study NAME [overrides]`: one application study as a Hydra app.

    adamlab study clip                       the quick size (<= 2 min on 2 CPU cores)
    adamlab study clip size=full             the size behind the real result
    adamlab study clip study.full.seeds=20   any override; -m sweeps work as in Hydra
    adamlab study --list                     every study, one line each
    python -m pipelines.study --all-quick    every quick study in sequence (one multirun)

NAME is shorthand for the override ``study=NAME`` (configs/study/NAME.yaml).
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from pipelines.harness.errors import UserError
from pipelines.studies import STUDIES

CONFIGS = str(Path(__file__).resolve().parent.parent / "configs")


@hydra.main(version_base="1.3", config_path=CONFIGS, config_name="study")
def app(cfg) -> dict:
    """A user's mistake (a config value, a data file) is one line on stderr and a non-zero
    status, before any work; a bug keeps its traceback; in a sweep the launcher reports it."""
    from pipelines.studies.engine import runner

    hydra_cfg = HydraConfig.get()
    try:
        return runner.run(cfg, Path(hydra_cfg.runtime.output_dir),
                          list(hydra_cfg.overrides.task))
    except UserError as error:
        if hydra_cfg.mode == RunMode.MULTIRUN:
            raise
        print(f"adamlab study: error: {error}", file=sys.stderr, flush=True)
        raise SystemExit(error.exit_code) from None


def listing() -> str:
    width = max(map(len, STUDIES))
    return "\n".join(f"{name:<{width}}  {about}" for name, about in STUDIES.items())


def hydra_argv(argv: list[str]) -> list[str]:
    """Our shorthands as Hydra arguments: NAME -> study=NAME; --all-quick -> a multirun
    over every study at size=quick."""
    if argv and argv[0] == "--all-quick":
        return ["-m", "study=" + ",".join(STUDIES), "size=quick", *argv[1:]]
    if argv and not argv[0].startswith("-") and "=" not in argv[0]:
        if argv[0] not in STUDIES:
            raise SystemExit(f"adamlab study: unknown study {argv[0]!r}; "
                             f"expected one of {', '.join(STUDIES)} (see --list)")
        return [f"study={argv[0]}", *argv[1:]]
    return argv


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--list" in argv:
        print(listing())
        return
    saved = sys.argv
    sys.argv = [saved[0], *hydra_argv(argv)]  # @hydra.main reads sys.argv
    try:
        app()
    finally:
        sys.argv = saved


if __name__ == "__main__":
    main()
