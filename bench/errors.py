"""The one error type `bench` raises for bad input (missing model, unknown provider, bad data)."""


class BenchError(Exception):
    """A problem with the input to a benchmark, reported as one line."""
