"""Temporal action localization: feature sequences (Ray Data), a 1-D detector (Ray Train),
ActivityNet-style mAP at temporal IoU 0.50:0.05:0.95."""
