"""Stage modules. Importing this package registers every stage type.

Modifiers are imported before the training stages, whose `with:` field is typed by them.
"""

from compress.stages import bench, export, finetune  # noqa: F401  (each registers itself)
