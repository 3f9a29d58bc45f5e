"""Tuning: Ray Tune sweeps over training settings, with ASHA, a results table and plots."""
