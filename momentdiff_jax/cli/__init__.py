"""Command-line entry points (layer 7): one module per console script.

  momentdiff-train      cli/train.py         python main.py
  momentdiff-evaluate   cli/evaluate.py      python evaluate.py
  momentdiff-predict    cli/predict.py       python predict.py
  momentdiff-build      cli/build.py         python data_prep/build_dataset.py
  momentdiff-extract    cli/extract.py       python data_prep/extract_features.py
  momentdiff-convert    cli/convert.py       python data_prep/convert_torch_checkpoint.py
  momentdiff-antibias   cli/antibias.py      python data_prep/make_antibias_splits.py
  momentdiff-restore-qids  cli/restore_qids.py  python data_prep/restore_antibias_qids.py
  momentdiff-demo       cli/demo.py          python demo.py
  momentdiff-summary    summary.py           python -m momentdiff_jax.summary

Each module defines its absl flags on its own FlagValues and exposes
`main(argv=None) -> int` (exit status); `momentdiff_jax.common.app` runs them. The
scripts at the repository root and in data_prep/ call these `main`s, nothing else.
Modules here are imported only by those entry points (nothing in the library
imports a command).
"""
