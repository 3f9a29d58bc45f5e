"""Preprocessing: raw competition videos + manifest -> clip shards."""
