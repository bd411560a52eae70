"""Command-line entry points: parse flags, build a config, call one pipeline function."""

import os

# TensorFlow's C++ INFO logs (dataset buffer sizes and the like) would interleave with progress bars.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")


# The errors a user can fix: bad flags, missing files, unknown names, offline weights, a busy output.
USER_ERRORS = (ValueError, FileNotFoundError, RuntimeError)


def comma_separated(text, kind=str):
    """'a,b,,c' -> (kind(a), kind(b), kind(c)); None for an empty or missing flag."""
    return tuple(kind(part.strip()) for part in text.split(",") if part.strip()) if text else None


def run(program: str, job, config) -> int:
    """Runs one pipeline function; a user error becomes one line on stderr and exit status 2."""
    import sys

    try:
        job(config)
    except USER_ERRORS as error:
        print(f"{program}: error: {error}", file=sys.stderr)
        return 2
    return 0
