"""Layer 5: turning a trained model into moments.

* `sampling`: the compiled DDIM sampling program (condition once, one scan over steps).
* `postprocess`: spans -> windows in seconds, rounding to clips, temporal NMS.
* `windows`: sliding windows for videos longer than `data.max_v_l` (pure numpy);
  `windows_eval` applies them to a dataset split.
* `predictor`: `Predictor`, the Python API (features, or video files with backbones).
* `plots`: figures of predictions and denoising trajectories.
"""
