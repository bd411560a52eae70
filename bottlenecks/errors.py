"""The backbones' user errors: a backbone, node or weights file that cannot be had or used as
asked."""


class BackboneError(ValueError):
    """Its message is meant for the user: one line that names the fix (another name, a file to
    place, a flag)."""
