"""The demo page in a real browser (headless Chromium driven by Playwright).

`python demo.py` serves a tiny CLIP workdir on a free loopback port; the browser
uploads a generated H.264 video, asks a query, and the moments read back from the page
equal `Predictor.predict_video` on the same file; clicking one plays that moment; bad
input (an empty query, an unreadable file, a video without frames) shows a message and
the server keeps answering. A screenshot is saved under the test's tmp dir.
Skips, saying why, where no Chromium binary is found (a system package, not pip's:
.ci/run installs Debian's `chromium`; set MOMENTDIFF_CHROMIUM to use another binary).
"""
import os
import re
import shutil
import subprocess
import sys
import threading

import numpy as np
from playwright import sync_api
import pytest

from tests import demo_fixtures  # pylint: disable=g-import-not-at-top

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUERY = demo_fixtures.QUERIES[0]


def chromium() -> str:
  path = os.environ.get('MOMENTDIFF_CHROMIUM') or next(
      filter(None, map(shutil.which, ('chromium', 'chromium-browser', 'google-chrome'))), None)
  if not path:
    pytest.skip('no Chromium binary (apt-get install chromium, or set MOMENTDIFF_CHROMIUM)')
  return path


def write_frameless(path) -> str:
  """An MP4 with a video stream and no frame."""
  import av  # pylint: disable=g-import-not-at-top
  with av.open(str(path), 'w') as c:
    s = c.add_stream('libx264', rate=10)
    s.width, s.height, s.pix_fmt = 64, 48, 'yuv420p'
    c.start_encoding()          # the header only (ffmpeg then finds no video stream)
  return str(path)


class Server:
  """`python demo.py ... --port=0` in a subprocess; `url` once it serves."""

  def __init__(self, args, env):
    self.proc = subprocess.Popen([sys.executable, os.path.join(ROOT, 'demo.py'), '--port=0']
                                 + args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
    self.lines, self.url = [], None
    self.ready = threading.Event()
    threading.Thread(target=self._read, daemon=True).start()

  def _read(self):
    for line in self.proc.stdout:
      self.lines.append(line)
      m = re.search(r'serving (http://127\.0\.0\.1:\d+/)', line)
      if m:
        self.url = m[1]
        self.ready.set()
    self.ready.set()

  def wait(self, timeout=300):
    self.ready.wait(timeout)
    assert self.url, 'demo.py did not start:\n' + ''.join(self.lines[-40:])
    return self.url

  def stop(self):
    self.proc.terminate()
    try:
      self.proc.wait(10)
    except subprocess.TimeoutExpired:
      self.proc.kill()


@pytest.fixture(scope='module')
def world(tmp_path_factory):
  exe = chromium()
  root = tmp_path_factory.mktemp('demo')
  w = demo_fixtures.clip_workdir(root)
  w.update(exe=exe, root=root, video=demo_fixtures.write_h264(root / 'doors.mp4'),
           junk=str(root / 'junk.mp4'), frameless=write_frameless(root / 'frameless.mp4'),
           short=demo_fixtures.write_h264(root / 'short.mp4', [((0, 0, 0), 0.1)]))
  (root / 'junk.mp4').write_bytes(b'\x00not a video' * 50)
  return w


def moments_on_page(page):
  return page.eval_on_selector_all(
      '#moments li.moment',
      'els => els.map(e => [+e.dataset.start, +e.dataset.end, +e.dataset.score])')


def wait_error(page, pattern):
  page.wait_for_selector('#error:not([hidden])', timeout=30000)
  text = page.text_content('#error')
  assert re.search(pattern, text), text
  return text


def test_demo_page_in_browser(world, tmp_path):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  server = Server([f'--workdir={world["workdir"]}', f'--clip_weights={world["clip"]}',
                   f'--cache_dir={tmp_path / "cache"}'], env)
  try:
    # The reference, computed while the server starts: a fresh Predictor, first call.
    from momentdiff_jax import Predictor  # pylint: disable=g-import-not-at-top
    ref = Predictor.from_workdir(world['workdir'], clip_weights=world['clip']
                                 ).predict_video(world['video'], QUERY)
    url = server.wait()
    with sync_api.sync_playwright() as pw:
      browser = pw.chromium.launch(executable_path=world['exe'],
                                   args=['--no-sandbox', '--autoplay-policy='
                                         'no-user-gesture-required'])
      page = browser.new_page(viewport={'width': 1100, 'height': 1000})
      js_errors = []
      page.on('pageerror', lambda e: js_errors.append(str(e)))
      page.goto(url)
      page.wait_for_function('document.getElementById("model").textContent.includes("DDIM")')

      # A video in; then an empty query is refused on the page.
      page.set_input_files('#file', world['video'])
      page.click('#upload')
      page.wait_for_selector('#askBtn:not([disabled])', timeout=120000)
      assert 'features ready' in page.text_content('#progressText')
      page.fill('#query', '   ')
      page.click('#askBtn')
      wait_error(page, r'empty')

      # A query: the page's moments are Predictor's.
      page.fill('#query', QUERY)
      page.fill('#topk', '10')
      page.click('#askBtn')
      page.wait_for_selector('#moments li.moment', timeout=60000)
      assert page.is_hidden('#error')
      got = np.asarray(moments_on_page(page))
      want = np.asarray(demo_fixtures.first_of_each(ref['pred_relevant_windows']))[:10]
      assert got.shape == want.shape and len(got) >= 1
      np.testing.assert_allclose(got, want, atol=1e-4)
      bars = page.eval_on_selector_all('#momentTrack .bar', 'els => els.length')
      assert bars == len(got)
      # Thumbnails arrived (decoded images).
      page.wait_for_function('[...document.querySelectorAll("#moments img")].every('
                             'i => i.complete && i.naturalWidth > 0)', timeout=20000)
      page.screenshot(path=str(tmp_path / 'demo.png'), full_page=True)
      assert os.path.getsize(tmp_path / 'demo.png') > 10000

      # Clicking a moment plays it: seek to its start, pause at its end.
      start, end = got[0, :2]
      page.eval_on_selector('#player', 'p => { p.muted = true; p.playbackRate = 4; }')
      page.click('#moments li.moment >> nth=0')
      page.wait_for_function('(() => { const p = document.getElementById("player");'
                             ' return !p.paused && p.currentTime > 0; })()', timeout=20000)
      page.wait_for_function('document.getElementById("player").paused', timeout=30000)
      t = page.eval_on_selector('#player', 'p => p.currentTime')
      assert end - 1e-3 <= t <= end + 1.5, (t, start, end)

      # The same query again: the cached answer; a second query reuses the features.
      page.fill('#query', demo_fixtures.QUERIES[1])
      page.click('#askBtn')
      page.wait_for_function('document.getElementById("status").textContent.includes('
                             '"extracted once")', timeout=60000)
      assert 'reused' in page.text_content('#status')

      # Bad files: a message on the page, and the server keeps serving.
      page.set_input_files('#file', world['junk'])
      page.click('#upload')
      wait_error(page, r'junk\.mp4.*(cannot open|no video)')
      page.set_input_files('#file', world['frameless'])
      page.click('#upload')
      wait_error(page, r"frameless\.mp4.*(no video stream|no clip|cannot open)")
      page.set_input_files('#file', world['short'])    # one frame: not half a clip
      page.click('#upload')
      wait_error(page, r'short\.mp4: no clip clip \(video shorter than half a 2\.0 s clip')
      page.set_input_files('#file', world['video'])     # same bytes: features reused
      page.click('#upload')
      page.wait_for_selector('#askBtn:not([disabled])')
      page.fill('#query', QUERY)
      page.click('#askBtn')
      page.wait_for_function('document.getElementById("status").textContent.includes('
                             '"answer reused")', timeout=30000)
      np.testing.assert_allclose(np.asarray(moments_on_page(page)), want, atol=1e-4)
      assert not js_errors, js_errors
      browser.close()
    assert server.proc.poll() is None
  finally:
    server.stop()
