"""Training: baseline fine-tuning and the pruning methods (LTP; ToP later)."""
