"""Layer 0: what every other layer shares, importing nothing of the package.

* `app`: how every command runs (absl flags on its own FlagValues, exit status).
* `config_base`: config helpers shared by `configs/*.py` and the run layer.
* `console`: one-line progress printing (process 0 only).
* `errors`: `DataError`, the error every input check raises.
* `jsonl`: reading annotation / prediction `.jsonl` files with line-numbered errors.
* `records`: what produced a set of features (written by `features`, read by `data`
  and `inference`).
* `atomic`: files written under a temporary name and renamed, never half-written.
"""
