"""Layer 5: turning a trained model into moments.

* `sampling`: the compiled DDIM sampling program (condition once, one scan over steps).
* `postprocess`: spans -> windows in seconds, rounding to clips, temporal NMS.
* `predictor`: `Predictor`, the Python API (features, or video files with backbones).
* `plots`: figures of predictions and denoising trajectories.
"""
