"""Command-line entry points: parse flags, build a config, call one pipeline function."""

import os

# TensorFlow's C++ start-up chatter (oneDNN, CPU features) hides the tools' own output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
