"""The application studies: one module per study, each a question about the optimizer library.

A study module has ``CLAIM`` (the statement its data is checked against) and
``run(p, out_dir) -> Outcome``; `pipelines.studies.runner` writes what every study writes
(results.csv, summary.csv, report.md, summary.json, the W&B group).
"""

STUDIES = {
    "valley": "Adam vs GD/momentum in ill-conditioned valleys: steps to f < tol vs condition "
              "number",
    "saddle": "escape from a strict saddle started at or near it: escape time vs perturbation",
    "ridge": "Adam on ridge regression vs the closed form, over alpha/beta1/beta2 and schedules",
    "overfit": "digits CNN on a small subset: Adam vs SGD+momentum, losses, gap, early stopping",
    "sparse": "rare large gradients suppress the effective step for ~1/(1-beta2) steps",
    "amsgrad": "Reddi et al.'s counterexample and effective-step spikes: Adam vs AMSGrad",
    "adamw": "weight norms per subspace and generalisation: Adam+L2 vs AdamW",
    "cyclic": "cyclical base rate on Adam vs constant and cosine, digits MLP",
    "clip": "clip before the moments vs clip the update under heavy-tailed gradient noise",
    "robust": "Huber loss x Adam under outlier contamination: redundant or synergistic?",
    "rl": "policy gradients: Adam vs SGD+momentum vs RMSprop x REINFORCE/PPO, steps to threshold",
    "mlip": "close-approach forces: Adam/AMSGrad/AdamW x force handling, divergence and MAE",
}
