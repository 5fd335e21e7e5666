"""The recipe engine: recipe validation, the stage catalog, run directories, manifests, summaries and the search."""
