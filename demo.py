"""The demo page: `python demo.py --workdir=DIR [--port=N]`, then open the printed address.

The command is `momentdiff_jax/cli/demo.py` (also the console script `momentdiff-demo`);
`python demo.py --help` lists its flags; docs/demo.md describes the page.
"""
import sys

from momentdiff_jax.cli.demo import main

if __name__ == '__main__':
  sys.exit(main())
