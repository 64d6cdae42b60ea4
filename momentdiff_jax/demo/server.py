"""The demo page's web server: FastAPI routes over a `service.DemoService`.

The command is `momentdiff_jax/cli/demo.py` (`python demo.py`, `momentdiff-demo`).
Serves one static page (docs/demo.md says why not Gradio) and the JSON API it uses:
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
import tempfile
from typing import Callable, List, Optional

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'static')


def create_app(service):
  """The FastAPI app over a `service.DemoService`."""
  from fastapi import FastAPI  # pylint: disable=g-import-not-at-top
  from fastapi.responses import FileResponse  # pylint: disable=g-import-not-at-top
  from fastapi.staticfiles import StaticFiles  # pylint: disable=g-import-not-at-top

  api = FastAPI(title='momentdiff-jax demo', docs_url=None, redoc_url=None)
  api.mount('/static', StaticFiles(directory=STATIC), name='static')
  _add_error_handlers(api)

  @api.get('/')
  def index():
    return FileResponse(os.path.join(STATIC, 'index.html'))

  @api.get('/api/info')
  def info():
    return service.info()

  _add_input_routes(api, service)
  _add_video_routes(api, service)
  return api


def _add_error_handlers(api) -> None:
  """Errors as {"detail": message}: 400 for bad input, 500 for the rest."""
  from fastapi.responses import JSONResponse  # pylint: disable=g-import-not-at-top

  @api.exception_handler(ValueError)      # InputError, VideoError, the Predictor's checks
  def bad_input(request, exc):  # pylint: disable=unused-argument
    return JSONResponse({'detail': str(exc)}, status_code=400)

  @api.exception_handler(Exception)
  def failed(request, exc):  # pylint: disable=unused-argument
    return JSONResponse({'detail': f'{type(exc).__name__}: {exc}'}, status_code=500)


def _entry(service, vid: str):
  """The service's entry of `vid`, or 404."""
  from fastapi import HTTPException  # pylint: disable=g-import-not-at-top
  try:
    return service.entry(vid)
  except KeyError:
    raise HTTPException(404, f'no video {vid!r} on this server (restarted?)') from None


def _add_uploaded(service, named, duration: Optional[str]):
  """Uploaded [(file name, bytes)]: feature files (+ duration) or one video -> its entry."""
  from momentdiff_jax.demo.service import InputError  # pylint: disable=g-import-not-at-top
  if not named:
    raise InputError('no file given')
  if all(n.lower().endswith(('.npz', '.npy')) for n, _ in named):
    try:
      dur = float(duration) if duration not in (None, '') else None
    except ValueError:
      raise InputError(f'duration must be a number of seconds, got {duration!r}') from None
    return service.add_feature_files(named, dur)
  if len(named) != 1:
    raise InputError('give one video file')
  return service.add_video_file(*named[0])


def _add_input_routes(api, service) -> None:
  """The routes that add a video: an upload, a pick from the library or synthetic."""
  from fastapi import File, Form, UploadFile  # pylint: disable=g-import-not-at-top
  from momentdiff_jax.demo.service import InputError  # pylint: disable=g-import-not-at-top

  @api.post('/api/videos')
  def upload(files: List[UploadFile] = File(...), duration: Optional[str] = Form(None)):
    named = [(f.filename or 'upload', f.file.read()) for f in files]
    return _add_uploaded(service, named, duration).status()

  @api.post('/api/pick')
  def pick(body: dict):
    source, name = body.get('source'), str(body.get('name') or '')
    if source == 'synthetic':
      return service.add_synthetic(name).status()
    if source == 'library':
      return service.add_library_video(name).status()
    raise InputError(f'unknown source {source!r}')


def _add_video_routes(api, service) -> None:
  """The routes of one added video: its state, media, thumbnails and queries."""
  from fastapi import File, Form, HTTPException, UploadFile  # pylint: disable=g-import-not-at-top
  from fastapi.responses import FileResponse, Response  # pylint: disable=g-import-not-at-top

  @api.get('/api/videos/{vid}')
  def status(vid: str):
    return _entry(service, vid).status()

  @api.get('/api/videos/{vid}/media')
  def media(vid: str):
    e = _entry(service, vid)
    if not e.media:
      raise HTTPException(404, 'this video has no playable media (features only)')
    return FileResponse(e.media)

  @api.get('/api/videos/{vid}/thumb/{clip}.jpg')
  def thumb(vid: str, clip: int):
    e = _entry(service, vid)
    if not 0 <= clip < len(e.thumbs):
      raise HTTPException(404, f'no thumbnail {clip}')
    return Response(e.thumbs[clip], media_type='image/jpeg')

  @api.post('/api/videos/{vid}/query')
  def query(vid: str, query: str = Form(''), top_k: int = Form(5),
            query_file: Optional[UploadFile] = File(None)):
    qf = None
    if query_file is not None and query_file.filename:
      qf = (query_file.filename, query_file.file.read())
    _entry(service, vid)
    return service.query(vid, query, top_k, qf)


def build_service(workdir: str, clip_weights=None, slowfast_weights=None, videos=None,
                  cache_dir=None, checkpoint='best', sampling_steps=None):
  from momentdiff_jax.inference.predictor import Predictor  # pylint: disable=g-import-not-at-top
  from momentdiff_jax.demo.service import DemoService  # pylint: disable=g-import-not-at-top
  p = Predictor.from_workdir(workdir, checkpoint, sampling_steps, clip_weights=clip_weights,
                             slowfast_weights=slowfast_weights)
  synthetic = None
  if p.config.data.get('name') == 'synthetic':
    from momentdiff_jax.demo.synthetic_source import SyntheticSource  # pylint: disable=g-import-not-at-top
    synthetic = SyntheticSource(p.config)
  cache_dir = cache_dir or tempfile.mkdtemp(prefix='momentdiff_demo_')
  return DemoService(p, cache_dir, videos, synthetic)


def serve(service, port: int, on_ready: Callable[[str], None] = print) -> None:
  """Serves the app on 127.0.0.1:`port` (0: any free port) until interrupted;
  `on_ready(url)` once the socket is bound."""
  import uvicorn  # pylint: disable=g-import-not-at-top
  server = uvicorn.Server(uvicorn.Config(create_app(service), host='127.0.0.1', port=port,
                                         log_level='warning'))
  startup = server.startup

  async def startup_and_announce(sockets=None):
    await startup(sockets=sockets)
    for s in server.servers:
      for sock in s.sockets:
        host, bound = sock.getsockname()[:2]
        on_ready(f'http://{host}:{bound}/')

  server.startup = startup_and_announce
  server.run()
