"""Stage modules. Importing this package registers every stage type.

Modifiers are imported before the training stages, whose `with:` field is typed by them.
"""

from compress.stages import distill, prune, qat  # noqa: F401  (modifiers first: train stages use them)
from compress.stages import bench, export, finetune  # noqa: F401  (each registers itself)
