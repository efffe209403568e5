"""Data: text files (data.text), GLUE tasks (data.glue) and their metrics (data.metrics)."""
