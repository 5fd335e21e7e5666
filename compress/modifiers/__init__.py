"""Modifiers that act inside a training stage (distill, prune, qat); `compress.engine.catalog` lists them."""
