"""Modifiers that act inside a training stage (distill, prune, qat); `compress.catalog` lists them."""
