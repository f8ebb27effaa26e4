"""Data sets (KITTI Depth Completion, NYU-style RGB-D, procedural synthetic scenes) and augmentation.

Every data set yields the sample dict of `augment.to_sample`:
    rgb (3, H, W) float32 [0, 1]; sparse, gt (1, H, W) float32 metres (0 = none); K (3, 3) float32; id str.
Modules are imported on demand (`from depth_completion_ros.data.kitti import KittiDepthCompletion`).
"""

__all__ = ["augment", "kitti", "rgbd", "synthetic"]
