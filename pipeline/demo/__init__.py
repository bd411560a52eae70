"""The one-command demo and its synthetic data."""
