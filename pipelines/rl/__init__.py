"""rl: REINFORCE (with or without a learned baseline), A2C and PPO on gymnasium vector envs,
Discrete and 1-D Box actions, any optimizer of the library. docs/rl.md has the details and
the measured returns.

    adamlab train pipeline=rl algo=ppo env.id=CartPole-v1
    adamlab train pipeline=rl algo=ppo_continuous env.id=HalfCheetah-v4      # CleanRL MuJoCo
    adamlab train pipeline=rl algo=ppo_lunarlander env.id=LunarLander-v3     # rl-zoo
    adamlab train pipeline=rl algo=a2c_sb3 pipeline.total_timesteps=500000   # SB3's A2C
    adamlab train pipeline=rl algo=reinforce algo.baseline=false pipeline.total_timesteps=500000
    adamlab eval runs/rl/<run> episodes=20 video=mp4

Layout: ``ppo.py``, ``a2c.py``, ``reinforce.py`` each read top to bottom (hyperparameter
dataclass, collect, prepare, update); ``module.py`` is the LightningModule (manual
optimization, one training_step per update); ``collector.py`` steps the envs;
``normalize.py`` keeps the observation/reward statistics; ``envs.py`` builds the envs (with
``env.wrappers``) and ``env_state.py`` turns their state into plain data for checkpoints;
``policy.py`` is a trained policy without Lightning (``policy.pt``); ``evaluate.py`` plays
episodes and videos; ``pipeline.py`` is the harness contract (validate, build, summary,
figures, evaluate).

Semantics worth knowing:
- Autoreset: SAME_STEP mode; truncated episodes are bootstrapped with V(final_obs)
  (``envs.py``), normalised like every observation.
- Normalisation (``env.normalize_obs``, ``env.normalize_reward``): SB3 VecNormalize
  semantics, one set of statistics for all sub-envs, in checkpoints and ``policy.pt``,
  frozen during evaluation; episode returns are always reported raw.
- Schedules and clipping come from the optimizer chain: ``algo.anneal_lr`` means
  ``schedule=linear`` to zero, stepped once per update; ``algo.max_grad_norm`` fills
  ``clip.max_norm`` (``clip=none`` turns it off, ``clip=update_norm`` moves it after the
  moments). ``optim=adam`` gets eps 1e-5 here (``pipeline.adam_eps``).
- Metrics (CSV/W&B, one row per update, filed under the global env steps before the update:
  the CSV's ``step``, W&B's ``global_step``): charts/episodic_return, charts/episodic_length,
  charts/mean_return_last20, charts/SPS, charts/learning_rate, charts/clip_coef,
  charts/update_epochs, losses/policy_loss, losses/value_loss, losses/entropy,
  losses/old_approx_kl, losses/approx_kl, losses/clipfrac, losses/explained_variance,
  eval/episodic_return, diagnostics/pg_minibatch_grad_variance,
  diagnostics/pg_minibatch_grad_cosine, diagnostics/pg_grad_norm. summary.json: eval_return,
  steps_to_threshold, threshold, mean_return_last20, env_steps, episodes, updates.
- Resume: a checkpoint holds the agent, optimizer, schedule, sampling RNG, counters,
  episode records, normalisation statistics, the metric history, and the envs' state as
  plain data where it can be represented (classic control, MuJoCo: resume is exact).
  AsyncVectorEnv and envs holding other objects (Box2D worlds) restart fresh episodes on
  resume, seeded from the step count: the episodes in flight are lost, the rest continues.
- DDP: ranks step envs of their own (seeds offset by rank) and average gradients; the
  budget and the step counts are global (module docstring).
"""
