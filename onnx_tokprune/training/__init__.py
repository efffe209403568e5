"""Training: baseline fine-tuning (finetune), LTP (ltp), ToP (top, with its gates and FLOPs constraint in constraint and l0, its ranking loss in ranking)."""
