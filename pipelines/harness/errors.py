"""One error type for bad input, raised before any work is done."""


class ConfigError(ValueError):
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
