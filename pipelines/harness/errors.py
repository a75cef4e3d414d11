"""The errors a user can cause, each printed as one line (no traceback) with its own exit code.

    adamlab train: error: optim.lr=-1 is invalid: expected a number > 0
    adamlab train: error: runs/x/checkpoints/last.ckpt: truncated or not a torch checkpoint ...

Anything else that escapes a run is a bug and keeps its traceback. docs/errors.md lists the
cases.
"""


class UserError(Exception):
    """A mistake in the input or an outcome of the run itself, not a bug in adamlab."""

    exit_code = 2


class ConfigError(UserError, ValueError):
    """A bad config value: names the key, the value and what is allowed."""

    def __init__(self, key: str, value, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r} is invalid: expected {allowed}")

    @classmethod
    def under(cls, prefix: str, error: ValueError) -> "ConfigError":
        """An optim/data ValueError ("lr=-1 is invalid: ...") as "optim.lr=-1 is invalid: ..."."""
        wrapped = cls.__new__(cls)
        wrapped.key, wrapped.value, wrapped.allowed = prefix, None, str(error)
        ValueError.__init__(wrapped, f"{prefix}.{error}")
        return wrapped


class FileError(ConfigError):
    """A file or directory that cannot be used: names it, says what is wrong and what would do."""

    def __init__(self, path, problem: str, allowed: str):
        self.key, self.value, self.allowed = str(path), problem, allowed
        ValueError.__init__(self, f"{path}: {problem}; expected {allowed}")


class RunFailed(UserError):
    """The run started and cannot go on (it diverged, its requeue failed): exit status 3."""

    exit_code = 3
