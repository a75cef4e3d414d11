"""rl: REINFORCE (with or without a learned baseline), A2C and PPO on gymnasium vector envs,
Discrete and 1-D Box actions, any optimizer of the library.

    adamlab train pipeline=rl algo=ppo env.id=CartPole-v1 optim=adam optim.eps=1e-5
    adamlab train pipeline=rl algo=a2c pipeline.total_timesteps=500000 optim.eps=1e-5
    adamlab train pipeline=rl algo=reinforce algo.baseline=false pipeline.total_timesteps=500000
    adamlab train pipeline=rl algo=ppo_pendulum env.id=Pendulum-v1 env.num_envs=4 \\
        pipeline.total_timesteps=200000 pipeline.threshold=-400 optim.eps=1e-5

Layout: ``ppo.py``, ``a2c.py``, ``reinforce.py`` each read top to bottom (hyperparameter
dataclass, collect, prepare, update); ``module.py`` is the LightningModule (manual
optimization, one training_step per update); ``collector.py`` steps the envs; ``envs.py``
builds them; ``pipeline.py`` is the harness contract (validate, build, summary, figures).

Semantics worth knowing:
- Autoreset: SAME_STEP mode; truncated episodes are bootstrapped with V(final_obs)
  (``envs.py``).
- Schedules and clipping come from the optimizer chain: ``algo.anneal_lr`` means
  ``schedule=linear`` to zero, stepped once per update; ``algo.max_grad_norm`` fills
  ``clip.max_norm`` (``clip=none`` turns it off, ``clip=update_norm`` moves it after the
  moments).
- Metrics (CSV/W&B, per update): episodic_return, episodic_length, mean_return_last20,
  eval_return, env_steps, sps, lr, policy_loss, value_loss, entropy, approx_kl,
  clip_fraction, clip_coef, explained_variance, pg_grad_variance, pg_grad_cosine,
  pg_grad_norm. summary.json: eval_return, steps_to_threshold, threshold,
  mean_return_last20, env_steps, episodes, updates.
- Resume: a checkpoint holds the agent, optimizer, schedule, sampling RNG, counters,
  episode records and the metric history, and the envs themselves for SyncVectorEnv over
  envs that pickle their state (classic control). AsyncVectorEnv and EzPickle envs (Box2D,
  MuJoCo) restart fresh episodes on resume, seeded from the step count: the episodes in
  flight at the checkpoint are lost, the rest continues.
"""
