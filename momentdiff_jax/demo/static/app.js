// The demo page: pick/upload a video, ask queries, draw and play the moments.
'use strict';
const $ = (id) => document.getElementById(id);
const state = { info: null, video: null, stopAt: null, answer: null };

function showError(msg) { $('error').textContent = msg; $('error').hidden = !msg; }
function setStatus(msg) { $('status').textContent = msg || ''; }
const fmt = (s) => (Math.round(s * 100) / 100).toFixed(s % 1 ? 1 : 0) + ' s';

async function api(path, options) {
  let res;
  try { res = await fetch(path, options); } catch (e) { throw new Error('the server did not answer: ' + e.message); }
  let body = null;
  try { body = await res.json(); } catch (e) { /* not JSON */ }
  if (!res.ok) throw new Error((body && body.detail) ? String(body.detail) : `HTTP ${res.status}`);
  return body;
}

async function init() {
  try {
    const info = state.info = await api('api/info');
    $('model').textContent = `${info.sampling_steps} DDIM steps · clip ${info.clip_len ?? '?'} s · ` +
      `video features: ${info.video_sources.join(' + ')} (${info.feature_dim}-d) · trained on up to ${info.max_v_l} clips`;
    const file = $('file');
    if (info.video_files) {
      file.accept = 'video/*,.mp4,.webm,.mkv,.mov,.avi';
      $('modeNote').textContent = 'Upload a video (its clip features are extracted once and kept for every query on it), or pick one.';
    } else {
      file.accept = '.npz,.npy'; file.multiple = info.video_sources.length > 1;
      $('durationBox').hidden = false;
      $('modeNote').textContent = (info.synthetic ? 'This workdir was trained on the built-in synthetic data (no video backbones). Pick one of its test videos, or upload ' :
        'This workdir cannot read video files here (' + info.video_reason + '). Upload ') +
        `clip features in the dataset layout: ${info.video_sources.join(', ')} as .npz (key "features") or .npy, ` +
        `(clips, ${info.feature_dim}); the duration defaults to clips × clip length.`;
    }
    const options = info.synthetic ? info.examples.map((e) => [e.vid, `${e.vid} · ${e.duration} s · "${e.query}"`])
      : info.library.map((n) => [n, n]);
    if (options.length) {
      $('pickRow').hidden = false;
      for (const [value, label] of options) $('pickSelect').add(new Option(label, value));
    }
    if (info.synthetic) {
      $('query').placeholder = 'e.g. concept7 (or the video\'s annotated query)';
      $('vocab').textContent = 'Synthetic vocabulary: ' + info.vocabulary +
        '. A test video\'s own annotated query uses the text features stored with the dataset.';
    }
    $('queryFileBox').hidden = info.text_typed;
  } catch (e) { showError('Could not load the model info: ' + e.message); }
}

async function upload() {
  showError('');
  const files = $('file').files;
  if (!files.length) { showError('Choose a file to upload first.'); return; }
  const form = new FormData();
  for (const f of files) form.append('files', f, f.name);
  if (!$('durationBox').hidden && $('duration').value) form.append('duration', $('duration').value);
  showProgress(0, 'uploading…');
  try { await follow(await api('api/videos', { method: 'POST', body: form })); }
  catch (e) { hideProgress(); showError(e.message); }
}

async function pick() {
  showError('');
  const source = state.info.synthetic ? 'synthetic' : 'library';
  showProgress(0, 'opening…');
  try {
    await follow(await api('api/pick', { method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ source, name: $('pickSelect').value }) }));
  } catch (e) { hideProgress(); showError(e.message); }
}

function showProgress(v, text) { $('progressBox').hidden = false; $('progress').value = v; $('progressText').textContent = text; }
function hideProgress() { $('progressBox').hidden = true; }

// Polls a video's state until its features are ready (progress bar) or it failed.
async function follow(st) {
  while (st.state === 'queued' || st.state === 'extracting') {
    showProgress(st.progress, `extracting features: ${Math.round(100 * st.progress)}%` + (st.message ? ` (${st.message})` : ''));
    await new Promise((r) => setTimeout(r, 250));
    st = await api(`api/videos/${st.id}`);
  }
  if (st.state === 'error') { hideProgress(); showError(st.message); return; }
  showProgress(1, st.extract_s != null ? `features ready (extracted in ${st.extract_s} s, kept for every query on this video)` : 'features ready');
  openVideo(st);
}

function openVideo(st) {
  state.video = st; state.answer = null;
  $('viewer').hidden = false; $('results').hidden = true; $('askBtn').disabled = false;
  $('videoTitle').textContent = `${st.name} · ${fmt(st.duration)} · ${st.num_clips} clips of ${st.clip_len} s`;
  const player = $('player');
  player.hidden = !st.has_media; $('noMedia').hidden = st.has_media;
  if (st.has_media) player.src = `api/videos/${st.id}/media`; else player.removeAttribute('src');
  $('conceptLane').hidden = !st.labels; $('gtLane').hidden = !st.annotation;
  drawLabels(st); drawAxis(st.duration); drawSaliency([]); $('momentTrack').innerHTML = '';
  const gt = $('gtTrack'); gt.innerHTML = '';
  if (st.annotation) {
    for (const [s, e] of st.annotation.windows) gt.appendChild(span('gt', s, e, st.duration, `annotated ${fmt(s)}–${fmt(e)}`));
    $('query').value = st.annotation.query;
  }
  setStatus(st.queries.length ? `${st.queries.length} earlier quer${st.queries.length > 1 ? 'ies' : 'y'} on this video (features reused)` : '');
}

function span(cls, s, e, dur, title) {
  const d = document.createElement('div');
  d.className = cls; d.style.left = `${100 * s / dur}%`; d.style.width = `${Math.max(0.4, 100 * (e - s) / dur)}%`;
  if (title) d.title = title;
  return d;
}

function drawLabels(st) {
  const t = $('conceptTrack'); t.innerHTML = '';
  if (!st.labels) return;
  let i = 0;
  while (i < st.labels.length) {
    let j = i; while (j < st.labels.length && st.labels[j] === st.labels[i]) j++;
    const d = span('seg', i * st.clip_len, Math.min(j * st.clip_len, st.duration), st.duration, `concept${st.labels[i]}`);
    d.style.background = st.label_colors[st.labels[i]]; d.textContent = `c${st.labels[i]}`;
    t.appendChild(d); i = j;
  }
}

function drawAxis(dur) {
  const a = $('axis'); a.innerHTML = '';
  const step = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600].find((s) => dur / s <= 10) || 1200;
  for (let t = 0; t <= dur + 1e-9; t += step) {
    const d = document.createElement('div'); d.className = 'tick';
    d.style.left = `${100 * t / dur}%`; d.textContent = `${t}s`; a.appendChild(d);
  }
}

function drawSaliency(values) {
  const svg = $('saliency'); svg.innerHTML = '';
  if (!values.length) return;
  const lo = Math.min(...values), hi = Math.max(...values), n = values.length;
  const pts = values.map((v, i) => `${(100 * (i + 0.5) / n).toFixed(2)},${(19 - 18 * (v - lo) / ((hi - lo) || 1)).toFixed(2)}`);
  svg.innerHTML = `<polyline points="${pts.join(' ')}" fill="none" stroke="#7a5af5" stroke-width="0.6" vector-effect="non-scaling-stroke"/>`;
}

async function ask(ev) {
  ev.preventDefault(); showError('');
  if (!state.video) { showError('Pick or upload a video first.'); return; }
  const form = new FormData();
  form.append('query', $('query').value); form.append('top_k', $('topk').value || '5');
  const qf = $('queryFile').files[0]; if (qf) form.append('query_file', qf, qf.name);
  $('askBtn').disabled = true; setStatus('searching…');
  try {
    const ans = await api(`api/videos/${state.video.id}/query`, { method: 'POST', body: form });
    showAnswer(ans);
  } catch (e) { setStatus(''); showError(e.message); }
  finally { $('askBtn').disabled = false; }
}

function showAnswer(ans) {
  state.answer = ans;
  const dur = ans.duration, list = $('moments'), track = $('momentTrack');
  list.innerHTML = ''; track.innerHTML = '';
  drawSaliency(ans.saliency);
  ans.moments.slice().reverse().forEach((m) => {   // best drawn last: on top
    const bar = span('bar', m.start, m.end, dur, `#${m.rank} ${fmt(m.start)}–${fmt(m.end)} score ${m.score.toFixed(3)}`);
    bar.textContent = `#${m.rank}`; bar.dataset.rank = m.rank; bar.style.opacity = 0.35 + 0.65 * m.score;
    bar.onclick = (e) => { e.stopPropagation(); playMoment(m); };
    track.appendChild(bar);
  });
  for (const m of ans.moments) {
    const li = document.createElement('li'); li.className = 'moment';
    Object.assign(li.dataset, { rank: m.rank, start: m.start, end: m.end, score: m.score });
    li.innerHTML = (m.thumb ? `<img alt="" src="${m.thumb}">` : '') +
      `<div class="when">#${m.rank} · ${fmt(m.start)} – ${fmt(m.end)}</div>` +
      `<div class="score">score ${m.score.toFixed(3)}${m.proposals > 1 ? ` · ${m.proposals} proposals` : ''}</div><div class="scorebar"><div style="width:${100 * m.score}%"></div></div>`;
    li.onclick = () => playMoment(m);
    list.appendChild(li);
  }
  $('resultQuery').textContent = `for "${ans.query}"`;
  $('results').hidden = false;
  setStatus(`${ans.moments.length} moment${ans.moments.length === 1 ? '' : 's'} · query features: ${ans.text_source} · ` +
    (ans.cached ? 'answer reused' : `answered in ${ans.seconds} s`) +
    (ans.extract_s != null ? ` · video features extracted once (${ans.extract_s} s) and reused` : ' · video features reused'));
}

// Plays [start, end) of the video: seek, play, pause at the end.
function playMoment(m) {
  document.querySelectorAll('.active').forEach((e) => e.classList.remove('active'));
  document.querySelectorAll(`[data-rank="${m.rank}"]`).forEach((e) => e.classList.add('active'));
  const p = $('player');
  setPlayhead(m.start);
  if (!state.video.has_media) return;
  state.stopAt = m.end;
  p.currentTime = m.start;
  p.play().catch(() => {});
}

function setPlayhead(t) {
  if (!state.video) return;
  const h = $('playhead'), track = $('momentTrack'), tl = $('timeline');
  const x = track.offsetLeft + track.offsetWidth * Math.min(1, t / state.video.duration);
  h.style.left = `${x}px`; h.style.display = 'block';
  void tl;
}

function init_player() {
  const p = $('player');
  p.addEventListener('timeupdate', () => {
    setPlayhead(p.currentTime);
    if (state.stopAt != null && p.currentTime >= state.stopAt) { p.pause(); state.stopAt = null; }
  });
  p.addEventListener('seeking', () => setPlayhead(p.currentTime));
  p.addEventListener('error', () => { if (state.video && state.video.has_media) setStatus('The browser cannot play this file\'s format; moments and thumbnails still work.'); });
  // Clicking a track seeks there.
  for (const id of ['conceptTrack', 'gtTrack', 'momentTrack']) {
    $(id).addEventListener('click', (e) => {
      if (!state.video) return;
      const r = e.currentTarget.getBoundingClientRect();
      const t = state.video.duration * (e.clientX - r.left) / r.width;
      state.stopAt = null; setPlayhead(t); if (state.video.has_media) p.currentTime = t;
    });
  }
}

$('upload').onclick = upload;
$('pickBtn').onclick = pick;
$('queryForm').onsubmit = ask;
init_player();
init();
