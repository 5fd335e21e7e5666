"""Model helpers every part shares: loading and saving classifiers, resolving model names, model structure."""
