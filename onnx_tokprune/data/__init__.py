"""Data: text files and (later) GLUE tasks."""
