"""Checkpoints: Orbax (checkpoint.py) and the GCS mirror (gcs.py)."""
