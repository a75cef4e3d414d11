"""The state of a gymnasium env as plain data (arrays, numbers, strings), never pickle.

A checkpoint may come from anywhere, so nothing in it may run code when loaded: the state of
each sub-env is a dict of tensors and plain Python values that ``torch.load(weights_only=True)``
reads back. It is taken attribute by attribute from the env and each of its wrappers:

- numbers, bools, strings, None, numpy arrays and numpy scalars, and tuples/lists of those,
  are stored as they are (arrays as tensors of the same dtype);
- a numpy ``Generator`` is stored as its bit-generator state (a dict of ints and strings);
- MuJoCo envs store their full integration state (``mj_getState(mjSTATE_INTEGRATION)``:
  time, positions, velocities, actuator state, controls, warm start), which reproduces the
  next steps bit for bit; the compiled model and the renderer are fixed by the env's id;
- structure fixed at construction is skipped: spaces, the spec, the wrapped env, constructor
  arguments, metadata, functions and partials (a TransformObservation's ``func``) and
  render handles that are still None.

Any other attribute (a Box2D world, a deque, a pygame surface, ...) means the state cannot be
represented: ``capture`` returns None and a resumed run starts fresh episodes in that env.
"""

from __future__ import annotations

import functools
import numbers
import types

import gymnasium as gym
import numpy as np
import torch

STATIC = {"env", "spec", "metadata", "_saved_kwargs", "_ezpickle_args", "_ezpickle_kwargs",
          "_previous_data",  # PassiveEnvChecker's copy of the last output (a warning aid)
          "action_space", "observation_space", "_action_space", "_observation_space",
          "_metadata", "_cached_spec", "_np_random"}
MUJOCO_STATIC = {"model", "data", "mujoco_renderer"}
GENERATOR = "np_random"


def capture(env: gym.Env) -> list[dict] | None:
    """The state of ``env`` and each wrapper around it, outermost first; None when some
    attribute cannot be stored as plain data."""
    layers = []
    for layer in _layers(env):
        state = _plain_attributes(layer)
        if state is None:
            return None
        layers.append(state)
    base = env.unwrapped
    layers[-1][GENERATOR] = _generator_state(base)
    mujoco = _mujoco_state(base)
    if mujoco is not None:
        layers[-1]["mujoco"] = mujoco
    return layers


def restore(env: gym.Env, layers: list[dict]) -> None:
    """Put a ``capture``d state back into an env built from the same id and kwargs."""
    targets = _layers(env)
    if len(targets) != len(layers):
        raise ValueError(f"env state has {len(layers)} layers, the env {len(targets)}")
    for layer, state in zip(targets, layers):
        for name, value in state.items():
            if name in (GENERATOR, "mujoco"):
                continue
            if name not in vars(layer):
                raise ValueError(f"env state names {name!r}, which {type(layer).__name__} "
                                 "does not have")
            setattr(layer, name, _unplain(value))
    base = env.unwrapped
    generator = layers[-1][GENERATOR]
    if generator is not None:
        base.np_random.bit_generator.state = generator  # numpy checks the generator type
    if "mujoco" in layers[-1]:
        import mujoco

        mujoco.mj_setState(base.model, base.data, layers[-1]["mujoco"].numpy(),
                           mujoco.mjtState.mjSTATE_INTEGRATION)


def _layers(env: gym.Env) -> list:
    layers = [env]
    while isinstance(layers[-1], gym.Wrapper):
        layers.append(layers[-1].env)
    return layers


def _plain_attributes(layer) -> dict | None:
    skip = STATIC | (MUJOCO_STATIC if _is_mujoco(layer) else set())
    state = {}
    for name, value in vars(layer).items():
        if name in skip or (value is None and name in ("screen", "clock", "window",
                                                       "viewer")):
            continue
        if isinstance(value, (gym.Space, types.FunctionType, types.BuiltinFunctionType,
                              functools.partial)):
            continue
        plain = _plain(value)
        if plain is _UNREPRESENTABLE:
            return None
        state[name] = plain
    return state


_UNREPRESENTABLE = object()


def _plain(value):
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            return _UNREPRESENTABLE
        return {"ndarray": torch.from_numpy(value.copy())}
    if isinstance(value, np.generic):
        return {"scalar": torch.from_numpy(np.array(value))}
    if isinstance(value, numbers.Number):
        return value
    if isinstance(value, (tuple, list)):
        items = [_plain(v) for v in value]
        if any(item is _UNREPRESENTABLE for item in items):
            return _UNREPRESENTABLE
        return {"tuple" if isinstance(value, tuple) else "list": items}
    return _UNREPRESENTABLE


def _unplain(value):
    if isinstance(value, dict):
        if "ndarray" in value:
            return value["ndarray"].numpy().copy()
        if "scalar" in value:
            return value["scalar"].numpy()[()]
        items = [_unplain(v) for v in value.get("tuple", value.get("list", []))]
        return tuple(items) if "tuple" in value else items
    return value


def _generator_state(base) -> dict | None:
    generator = getattr(base, "_np_random", None)
    return None if generator is None else generator.bit_generator.state


def _is_mujoco(layer) -> bool:
    return type(getattr(layer, "data", None)).__name__ == "MjData"


def _mujoco_state(base) -> torch.Tensor | None:
    if not _is_mujoco(base):
        return None
    import mujoco

    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    state = np.empty(mujoco.mj_stateSize(base.model, spec))
    mujoco.mj_getState(base.model, base.data, state, spec)
    return torch.from_numpy(state)
