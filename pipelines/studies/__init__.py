"""The application studies: one module per study, each a question about the optimizer library.

A study's config (configs/study/NAME.yaml) declares its claim, arms, tuning rule, seeds and
checks before it runs; its module states the problem and returns the rows: ``run(session)
-> engine.Result``. The engine (pipelines.studies.engine) tunes the arms, evaluates the
checks, decides the verdict and writes the report; problems used by several studies live
in pipelines.studies.problems.
"""

STUDIES = {
    "valley": "Adam vs GD/heavy-ball (beta tuned) in valleys: Rosenbrock 2-D, N-d, rotated, "
              "Beale, quadratics vs condition number",
    "saddle": "escape from a strict saddle started at or near it: escape time vs perturbation",
    "ridge": "Adam on ridge regression vs the closed form, over alpha/beta1/beta2 and schedules",
    "overfit": "Adam vs SGD+momentum: Wilson et al.'s construction and a Fashion-MNIST CNN",
    "sparse": "rare large gradients suppress the effective step for ~1/(1-beta2) steps",
    "amsgrad": "Reddi et al.'s counterexamples and regret, effective-step spikes: Adam vs "
               "AMSGrad",
    "adamw": "weight norms per subspace and Loshchilov & Hutter's lr x wd grid: Adam+L2 vs "
             "AdamW",
    "cyclic": "cyclical lr (LR range test bounds) on Adam vs constant and cosine, "
              "Fashion-MNIST",
    "clip": "clip before the moments vs clip the update under heavy-tailed gradient noise",
    "robust": "Huber loss x Adam under outlier contamination, linear and non-convex",
    "rl": "policy gradients: update-direction noise of Adam vs SGD at the same policy "
          "snapshots; tuned Adam vs SGD+momentum x REINFORCE/PPO, steps to threshold",
    "mlip": "close-approach forces: tuned Adam vs SGD+momentum x force handling on EMT Cu "
            "and DFT Ni: force MAE, spikes, the filter's kept and dropped tails",
    "gnn": "degree bias: head-tail gaps under tuned Adam/AdamW/SGD+momentum/RMSprop on "
           "power-law DC-SBMs, a near-regular control and Cora; dense vs lazy Adam",
}
