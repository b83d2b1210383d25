"""The one exception a user sees from reports/: its message is a single sentence, no traceback."""


class ReportError(ValueError):
    """A report cannot be made as asked (unknown experiment, no sweep in it, missing store)."""
