"""The storage's user errors: records or an output directory that cannot be used as asked."""


class RecordsError(ValueError):
    """Its message is meant for the user: one line that names the fix (a command to rerun, space to
    free)."""
