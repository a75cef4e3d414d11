"""The shared training harness: config validation, optimizers, loggers, callbacks, run dir."""
