"""User-facing errors.

Anything caused by the user's input (a recipe, a file, a model name) raises `EdgebertError` with a
message that fits on one line and names the culprit. The CLI prints that line and exits non-zero;
only `--debug` shows a traceback. `export` and `bench` raise their own error types (they must not
import this package); `USER_ERRORS` collects all of them for the CLI.
"""

from bench.errors import BenchError
from export.errors import ExportError


class EdgebertError(Exception):
    """A problem with the user's input, reported as one line."""


class RunInterrupted(EdgebertError):
    """A run stopped by SIGTERM or Ctrl-C: its folder continues with `--resume`. Its own type,
    so that a search stops with it instead of taking it for a failed trial."""


USER_ERRORS: tuple[type[Exception], ...] = (EdgebertError, ExportError, BenchError)
