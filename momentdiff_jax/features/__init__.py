"""Feature extraction in JAX: video decoding and per-clip sampling, CLIP and SlowFast.

* `video`: PyAV decoding and the frame sampling of the public feature extractors
  (`ClipSampler`, `SlowFastSampler`, the ffmpeg `fps` filter rule).
* `clip`, `clip_model`, `clip_tokenizer`: CLIP image / text towers and BPE tokenizer
  from a Hugging Face CLIP directory. `slowfast`, `slowfast_model`: SlowFast R50.
* `weights`, `numpy_pickle`: safe, strict loading of local weight files (Caffe2 `.pkl`
  through an unpickler that admits numpy arrays only).
* `backbones`: loaded backbones as data-parallel `uint8 clips -> features` encoders.
* `extract`: feature files in the Moment-DETR layout (data_prep/extract_features.py);
  `shards`: the same split over processes or jobs, checked and finalized at the end.
* what produced a set of features is recorded with `common.records` (checked by
  `Predictor.predict_video`).
docs/features.md lists the facts and their sources.
"""
