"""Training: the loop and its state, checkpoints, data-parallel ranks, thresholds, cached teacher logits."""
