"""edgebert's compression side: data, training, stages, the recipe engine and the CLI.

`compress` composes `export` and `bench`; those two never import `compress`.
"""

__version__ = "0.1.0"
