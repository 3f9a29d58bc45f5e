"""Recognition from 2-D poses: ST-GCN on skeletons and a PoseC3D-style 3-D CNN on
heatmap volumes, trained on the training engine (``train/engine.py``) from the pose
shards beside a store's clips (``dataset/pose_store.py``), evaluated with the clips'
protocol (``train/evaluate.py``), so that pose runs fuse with RGB and flow runs."""
