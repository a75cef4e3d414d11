"""The `adamlab` console script: `adamlab train ...`, `adamlab study ...`, `adamlab eval ...`,
`adamlab report`.

train and study are Hydra apps, so every override, `-m`, `hydra.run.dir=...` and
`--help` work as Hydra users expect; eval scores a trained run (`pipelines.evaluate`);
report gathers every study's latest full-size result into docs/studies
(`pipelines.studies.engine.site`).

Start-up: this module imports nothing heavy; `adamlab --help` and `adamlab study --list`
answer without Hydra or torch, and each command imports only what it runs (bench/startup.py).
"""

from __future__ import annotations

import sys

USAGE = """usage: adamlab {train,study,eval,report} [overrides ...]

  adamlab train pipeline=gnn data=cora model=gcn optim=adamw optim.lr=0.01 seed=0
  adamlab train -m pipeline=gnn optim=adam,adamw,amsgrad seed=0,1,2
  adamlab train --help          config groups and their choices
  adamlab study --list          the studies
  adamlab study clip            run one
  adamlab eval RUN_DIR_OR_CKPT [episodes=N deterministic=false video=mp4 ...]
  adamlab report                every study's latest full-size result: docs/studies/index.html
"""


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "eval":
        from pipelines import evaluate

        evaluate.main(argv[1:])
        return
    if argv and argv[0] == "report":
        from pipelines.studies.engine import site

        site.main(argv[1:])
        return
    if not argv or argv[0] not in ("train", "study"):
        print(USAGE, file=sys.stderr)
        raise SystemExit(0 if argv and argv[0] in ("-h", "--help") else 2)
    command, rest = argv[0], argv[1:]
    if command == "study" and "--list" in rest:  # answered without importing Hydra
        from pipelines.studies import STUDIES

        width = max(map(len, STUDIES))
        print("\n".join(f"{name:<{width}}  {about}" for name, about in STUDIES.items()))
        return
    if command == "train":
        from pipelines import train as app
    else:
        from pipelines import study as app
    # argv[0] is the app's own file: Lightning's DDP launcher re-executes `python argv[0]
    # <overrides>` for the other ranks, which must land in the same Hydra app
    sys.argv = [app.__file__, *rest]
    app.main()


if __name__ == "__main__":
    main()
