"""The one error type `export` raises for bad input (missing or corrupt model, wrong task)."""


class ExportError(Exception):
    """A problem with the input to an export step, reported as one line."""
