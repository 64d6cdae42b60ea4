r"""The demo page: a local web page to try a trained workdir on videos and queries.

  python demo.py --workdir=DIR [--port=7860] [--clip_weights=PATH --slowfast_weights=PATH]

The same as the console script `momentdiff-demo` (momentdiff_jax/demo/server.py);
docs/demo.md says what the page does.
"""
from momentdiff_jax.demo.server import run

if __name__ == '__main__':
  run()
