r"""The demo page: a local web server over one trained workdir.

  python demo.py --workdir=DIR [--port=7860] [--clip_weights=PATH --slowfast_weights=PATH]
      [--videos=DIR] [--cache_dir=DIR]
  momentdiff-demo ...            (the same, installed as a console script)

Serves http://127.0.0.1:PORT/ (loopback only). FastAPI + one static page (docs/demo.md
says why not Gradio). The JSON API the page uses:
  GET  /api/info                      the workdir: what it can read, synthetic examples
  POST /api/videos                    upload: a video file, or feature files (+ duration)
  POST /api/pick                      {source: 'library'|'synthetic', name}
  GET  /api/videos/{id}               state, progress (extraction), clip labels, ...
  GET  /api/videos/{id}/media         the video to play (HTTP range requests)
  GET  /api/videos/{id}/thumb/{k}.jpg clip k's thumbnail
  POST /api/videos/{id}/query         {query, top_k} or a query feature file -> moments
Bad input answers 400 with {"detail": message}; the page shows the message.
"""
import os
import sys
import tempfile
from typing import List, Optional

from absl import app as absl_app
from absl import flags

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'static')

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Trained (or converted) run directory.')
flags.DEFINE_integer('port', 7860, 'Port on 127.0.0.1 (0: any free port, printed).')
flags.DEFINE_string('clip_weights', None,
                    'Hugging Face CLIP directory (CLIPModel.save_pretrained).')
flags.DEFINE_string('slowfast_weights', None, 'SlowFast 8x8 R50 checkpoint file.')
flags.DEFINE_string('videos', None, 'A folder of videos the page offers to pick from.')
flags.DEFINE_string('cache_dir', None, 'Uploads and rendered media (default: a temp dir).')
flags.DEFINE_enum('checkpoint', 'best', ['best', 'latest'], 'Which checkpoint to use.')
flags.DEFINE_integer('sampling_steps', None, 'DDIM steps (default: the config\'s).')


def create_app(service):
  """The FastAPI app over a `service.DemoService`."""
  from fastapi import FastAPI, File, Form, HTTPException, UploadFile  # pylint: disable=g-import-not-at-top
  from fastapi.responses import FileResponse, JSONResponse, Response  # pylint: disable=g-import-not-at-top
  from fastapi.staticfiles import StaticFiles  # pylint: disable=g-import-not-at-top
  from momentdiff_jax.demo.service import InputError  # pylint: disable=g-import-not-at-top

  api = FastAPI(title='momentdiff-jax demo', docs_url=None, redoc_url=None)
  api.mount('/static', StaticFiles(directory=STATIC), name='static')

  @api.exception_handler(ValueError)      # InputError, VideoError, the Predictor's checks
  def bad_input(request, exc):  # pylint: disable=unused-argument
    return JSONResponse({'detail': str(exc)}, status_code=400)

  @api.exception_handler(Exception)
  def failed(request, exc):  # pylint: disable=unused-argument
    return JSONResponse({'detail': f'{type(exc).__name__}: {exc}'}, status_code=500)

  def entry(vid):
    try:
      return service.entry(vid)
    except KeyError:
      raise HTTPException(404, f'no video {vid!r} on this server (restarted?)') from None

  @api.get('/')
  def index():
    return FileResponse(os.path.join(STATIC, 'index.html'))

  @api.get('/api/info')
  def info():
    return service.info()

  @api.post('/api/videos')
  def upload(files: List[UploadFile] = File(...), duration: Optional[str] = Form(None)):
    named = [(f.filename or 'upload', f.file.read()) for f in files]
    if not named:
      raise InputError('no file given')
    if all(n.lower().endswith(('.npz', '.npy')) for n, _ in named):
      try:
        dur = float(duration) if duration not in (None, '') else None
      except ValueError:
        raise InputError(f'duration must be a number of seconds, got {duration!r}') from None
      return service.add_feature_files(named, dur).status()
    if len(named) != 1:
      raise InputError('give one video file')
    return service.add_video_file(*named[0]).status()

  @api.post('/api/pick')
  def pick(body: dict):
    source, name = body.get('source'), str(body.get('name') or '')
    if source == 'synthetic':
      return service.add_synthetic(name).status()
    if source == 'library':
      return service.add_library_video(name).status()
    raise InputError(f'unknown source {source!r}')

  @api.get('/api/videos/{vid}')
  def status(vid: str):
    return entry(vid).status()

  @api.get('/api/videos/{vid}/media')
  def media(vid: str):
    e = entry(vid)
    if not e.media:
      raise HTTPException(404, 'this video has no playable media (features only)')
    return FileResponse(e.media)

  @api.get('/api/videos/{vid}/thumb/{clip}.jpg')
  def thumb(vid: str, clip: int):
    e = entry(vid)
    if not 0 <= clip < len(e.thumbs):
      raise HTTPException(404, f'no thumbnail {clip}')
    return Response(e.thumbs[clip], media_type='image/jpeg')

  @api.post('/api/videos/{vid}/query')
  def query(vid: str, query: str = Form(''), top_k: int = Form(5),
            query_file: Optional[UploadFile] = File(None)):
    qf = None
    if query_file is not None and query_file.filename:
      qf = (query_file.filename, query_file.file.read())
    entry(vid)
    return service.query(vid, query, top_k, qf)

  return api


def build_service(workdir: str, clip_weights=None, slowfast_weights=None, videos=None,
                  cache_dir=None, checkpoint='best', sampling_steps=None):
  from momentdiff_jax import Predictor  # pylint: disable=g-import-not-at-top
  from momentdiff_jax.demo.service import DemoService  # pylint: disable=g-import-not-at-top
  p = Predictor.from_workdir(workdir, checkpoint, sampling_steps, clip_weights=clip_weights,
                             slowfast_weights=slowfast_weights)
  synthetic = None
  if p.config.data.get('name') == 'synthetic':
    from momentdiff_jax.demo.synthetic_source import SyntheticSource  # pylint: disable=g-import-not-at-top
    synthetic = SyntheticSource(p.config)
  cache_dir = cache_dir or tempfile.mkdtemp(prefix='momentdiff_demo_')
  return DemoService(p, cache_dir, videos, synthetic)


def main(argv) -> int:
  del argv
  if not FLAGS.workdir:
    print('demo: error: --workdir=DIR is required (a trained run, e.g. workdirs/synthetic)',
          file=sys.stderr)
    return 1
  from momentdiff_jax import compile_cache, console  # pylint: disable=g-import-not-at-top
  console.quiet_libraries(console.verbosity_given(FLAGS))
  compile_cache.enable(None)
  try:
    import fastapi  # pylint: disable=g-import-not-at-top,unused-import
    import uvicorn  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    print(f'demo: error: {e.name} is missing: pip install -e \'.[demo]\'', file=sys.stderr)
    return 1
  if FLAGS.videos and not os.path.isdir(FLAGS.videos):
    print(f'demo: error: --videos is not a folder: {FLAGS.videos}', file=sys.stderr)
    return 1
  try:
    service = build_service(FLAGS.workdir, FLAGS.clip_weights, FLAGS.slowfast_weights,
                            FLAGS.videos, FLAGS.cache_dir, FLAGS.checkpoint,
                            FLAGS.sampling_steps)
  except (ValueError, FileNotFoundError) as e:
    print(f'demo: error: {e}', file=sys.stderr)
    return 1
  config = uvicorn.Config(create_app(service), host='127.0.0.1', port=FLAGS.port,
                          log_level='warning')
  server = uvicorn.Server(config)
  _announce(server)
  server.run()
  return 0


def _announce(server) -> None:
  """Prints the page's address once the socket is bound (the port may be 0: any)."""
  startup = server.startup

  async def startup_and_print(sockets=None):
    await startup(sockets=sockets)
    for s in server.servers:
      for sock in s.sockets:
        host, port = sock.getsockname()[:2]
        print(f'demo: serving http://{host}:{port}/  (Ctrl-C stops)', flush=True)

  server.startup = startup_and_print


def run() -> None:
  """Console script `momentdiff-demo`."""
  absl_app.run(lambda argv: sys.exit(main(argv)))
