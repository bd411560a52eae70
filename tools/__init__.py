"""Command-line entry points: parse flags, build a config, call one pipeline function."""
