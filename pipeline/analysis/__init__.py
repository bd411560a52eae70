"""The analyses: the one evaluation path and the report."""
