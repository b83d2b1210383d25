"""The errors of the sweep layer: each is a user's mistake or a store's state, and its message is one
sentence naming what is wrong and what is allowed (the CLI prints it without a traceback)."""


class SweepError(RuntimeError):
    """A sweep cannot start or resume; the message says why and what to do."""


class SpaceError(ValueError):
    """A search space file is invalid; the message names the file, the key and what is allowed."""


class TrackingError(RuntimeError):
    """The MLflow store cannot be used; the message says which and why."""
