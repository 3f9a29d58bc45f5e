"""Preprocessing: raw competition videos + manifest -> clip shards (issue 3, in progress)."""
