"""The demo page (`python demo.py --workdir=DIR`, console script `momentdiff-demo`).

`server.py`: FastAPI app and command line; `service.py`: videos, feature cache,
queries; `synthetic_source.py`: the synthetic dataset as page material; `media.py`:
thumbnails and rendered synthetic videos; `static/`: the page.
"""
