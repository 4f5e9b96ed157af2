"""Evidently drift reports and the retraining trigger (not built yet; see README)."""
