"""`Predictor`: a trained (or converted) workdir applied to raw feature arrays.

    from momentdiff_jax import Predictor
    p = Predictor.from_workdir('workdirs/charades')
    p.video_sources                # e.g. ['clip_features', 'slowfast_features']
    out = p.predict({'clip_features': clip (L, 512), 'slowfast_features': sf (L, 2304)},
                    text_tokens (Lt, 512), duration=30.2)
    out['pred_relevant_windows']   # [[start_s, end_s, score], ...] best first

Video features of several types are given as a dict keyed by source name (any order:
they are arranged as the weights expect) or as a list in `p.video_sources` order, the
order of the dataset the weights were trained on (the release's SF+C checkpoints:
CLIP first, then SlowFast).

Videos up to `data.max_v_l` clips are padded to a length bucket (the config's
buckets), so a handful of programs serve every call; the compiled sampler (condition
once, one scan over the DDIM steps) is reused across calls. Longer videos are cut into
overlapping windows of `max_v_l` clips, run as one batch, and the windows' moments
merged (`inference/windows.py`, docs/long_videos.md; `config.inference.sliding_windows
= False`: padded whole, as before).

From a video file and a sentence (features extracted on the fly, with the backbones
the workdir's dataset was built with; a different backbone is refused by name):

    p = Predictor.from_workdir('workdirs/qvh_clip', clip_weights='clip-vit-base-patch32')
    p.predict_video('video.mp4', 'a man opens the door')
    # {'video', 'query', 'duration', 'pred_relevant_windows', 'pred_saliency_scores'}
    p.predict_video('video.mp4', ['a man opens the door', 'a dog barks'])   # [dict, dict]

Many queries on one video: the video is decoded and encoded once and the queries run
as one batch through the compiled sampler. To keep a video's features for later
queries (the demo page does):

    feats = p.encode_video('video.mp4')          # VideoFeatures
    p.predict_features(feats, ['a man opens the door', 'a dog barks'])

Sampling randomness: every query takes the next key `fold_in(PRNGKey(seed), i)`, i
counting the queries this Predictor has answered, and its spans are drawn with that key
alone (a long video's window w with `fold_in(key, w)`); so a list of queries gives
what the same queries one call each would.
"""
import dataclasses
import warnings
from typing import Callable, List, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from momentdiff_jax.data.examples import append_tef
from momentdiff_jax.data.sources import combine_video_types, l2_normalize
from momentdiff_jax.inference import postprocess
from momentdiff_jax.inference import sampling
from momentdiff_jax.inference import windows as windows_lib
from momentdiff_jax.ops import diffusion
from momentdiff_jax.run import workdir as workdir_lib

# Rows (queries, or a long video's windows x queries) per sampler call; batches are
# padded to a power of two up to this, so at most log2(MAX_BATCH) + 1 programs per
# video length bucket.
MAX_BATCH = 64


@dataclasses.dataclass
class VideoFeatures:
  """One video's clip features, extracted once to answer many queries.

  `features`: per video source (L_i, D_i) float32, in the weights' order
  (`Predictor.video_sources`); `duration` in seconds; `clip_len` seconds per clip.
  """
  features: List[np.ndarray]
  duration: float
  clip_len: float
  path: Optional[str] = None

  @property
  def num_clips(self) -> int:
    return min(len(f) for f in self.features)


def _batch_size(n: int) -> int:
  return 1 << max(0, (n - 1).bit_length())


def _warn_unchecked(video_rec, text_rec, enc) -> None:
  """Says (a UserWarning, once per Predictor: `encoders()` is cached) which backbones
  the workdir's dataset records no weights fingerprint for (features of the public
  releases, named by their directory): the given weights cannot be checked."""
  unchecked = [(f'{r["backbone"]} video', r['backbone'])
               for r in video_rec if not r.get('fingerprint')]
  if not text_rec.get('fingerprint'):
    unchecked.append(('CLIP text', 'clip'))
  if not unchecked:
    return
  given = sorted({str(enc.records[n].get('weights')) for _, n in unchecked})
  warnings.warn(
      'the workdir\'s dataset records no weights fingerprint for its '
      + ', '.join(what for what, _ in unchecked) + ' features (the public feature '
      f'releases record none), so the given weights ({", ".join(given)}) are used '
      'unchecked: weights other than those that made the training features give wrong '
      'moments without any error. The public features come from CLIP ViT-B/32 '
      '(openai/clip-vit-base-patch32) and SlowFast SLOWFAST_8x8_R50.pkl of the SlowFast '
      'model zoo (docs/features.md).', UserWarning, stacklevel=3)


class Predictor:
  """Moment retrieval with one model; see the module docstring."""

  def __init__(self, config, params, sampling_steps: Optional[int] = None, seed: int = 0,
               clip_weights: Optional[str] = None, slowfast_weights: Optional[str] = None):
    self.config = windows_lib.with_defaults(config)   # older config.json: defaults
    windows_lib.settings(self.config)                   # bad inference.* values: ValueError
    self.params = params
    self.model = workdir_lib.create_model(config, config.video_dim, config.text_dim)
    self.sampling_steps = int(sampling_steps or config.diffusion.sampling_steps)
    # The run's sampler with one replica (params (1, ...), no swept values), rows keyed.
    sample = sampling.make_sample_fn(self.model, config, diffusion.make_schedule(config.diffusion),
                                     self.sampling_steps, row_keys=True)
    self._sample = jax.jit(lambda p, vf, vm, qf, qm, keys: jax.tree.map(
        lambda x: x[0], sample(jax.tree.map(lambda x: x[None], p), vf, vm, qf, qm,
                               keys[None], {})))
    self._rng = jax.random.PRNGKey(seed)
    self._calls = 0
    self.weights = {'clip': clip_weights, 'slowfast': slowfast_weights}
    self._encoders = None

  @classmethod
  def from_workdir(cls, workdir: str, checkpoint: str = 'best',
                   sampling_steps: Optional[int] = None, seed: int = 0,
                   clip_weights: Optional[str] = None,
                   slowfast_weights: Optional[str] = None,
                   replica: Optional[int] = None) -> 'Predictor':
    """Loads `workdir/config.json` and the `best` (else latest) checkpoint's params.

    `clip_weights` / `slowfast_weights` (local paths) are needed by `predict_video`.
    A workdir of several replicas (`--config.num_seeds`, sweeps): `replica` k, by
    default the one whose best checkpoint scored highest on validation; the config is
    that replica's (its swept values, e.g. `diffusion.eta`, apply).
    """
    replica = workdir_lib.best_replica(workdir) if replica is None else replica
    run = workdir_lib.restore(workdir, checkpoint, replica=replica)
    params = jax.tree.map(lambda x: jnp.asarray(x[0]), run.params)
    return cls(run.config, params, sampling_steps, seed, clip_weights, slowfast_weights)

  @property
  def feature_dim(self) -> int:
    """Clip feature size expected before the 2 TEF features are appended."""
    return self.config.video_dim - (2 if self.config.data.use_tef else 0)

  def padded_length(self, num_clips: int) -> int:
    buckets = sorted(int(b) for b in self.config.data.length_buckets)
    for b in buckets:
      if num_clips <= b:
        return b
    return -(-num_clips // buckets[-1]) * buckets[-1]

  @property
  def video_sources(self) -> Optional[list]:
    """Video feature sources in the order the weights expect (None: not recorded)."""
    names = self.config.get('video_sources')
    return list(names) if names else None

  def _ordered(self, video_features: dict) -> list:
    """A dict {source name: (L, D)} -> list in the weights' order (names must match)."""
    expected = self.video_sources
    if expected is None:
      raise ValueError('this workdir records no video source order (config.video_sources): '
                       'pass the per-type features as a list in the training order')
    if sorted(video_features) != sorted(expected):
      raise ValueError(f'video feature sources differ: the weights expect {expected} (in '
                       f'this order), the input has {list(video_features)}')
    return [video_features[name] for name in expected]

  def _video(self, video_features) -> np.ndarray:
    """Per-type arrays -> (L, Dv) as the dataset builder stores them, plus TEF."""
    if isinstance(video_features, dict):
      video_features = self._ordered(video_features)
    types = ([video_features] if not isinstance(video_features, (list, tuple))
             else list(video_features))
    types = [np.asarray(t, np.float32) for t in types]
    for i, t in enumerate(types):
      if t.ndim != 2 or t.shape[0] == 0:
        raise ValueError(f'video_features[{i}] must be (num_clips > 0, dim), got {t.shape}')
    video = combine_video_types(types, self.config.data.get('normalize_video', True))
    if video.shape[1] != self.feature_dim:
      raise ValueError(f'video features have {video.shape[1]} dims in total, the model '
                       f'expects {self.feature_dim} (per type as in the training dataset)')
    if not np.all(np.isfinite(video)):
      raise ValueError('video features contain NaN or Inf')
    if self.config.data.use_tef:
      video = append_tef(video)
    return video

  def _query(self, query_features) -> np.ndarray:
    """(Lt, Dt) token features -> checked, cut to `max_q_l`, normalized as in training."""
    query = np.asarray(query_features, np.float32)
    if query.ndim != 2 or query.shape[0] == 0 or query.shape[1] != self.config.text_dim:
      raise ValueError(f'query_features must be (num_tokens > 0, {self.config.text_dim}), '
                       f'got {query.shape}')
    if not np.all(np.isfinite(query)):
      raise ValueError('query features contain NaN or Inf')
    query = query[:self.config.data.max_q_l]
    if self.config.data.get('normalize_text', True):
      query = l2_normalize(query)
    return query

  def _next_keys(self, n: int) -> jax.Array:
    """(n,) sampling keys: the next n of fold_in(PRNGKey(seed), 0, 1, 2, ...)."""
    keys = jnp.stack([jax.random.fold_in(self._rng, self._calls + i) for i in range(n)])
    self._calls += n
    return keys

  def _sample_rows(self, video: np.ndarray, queries: List[np.ndarray], keys) -> dict:
    """One video (n, Dv) with TEF, B queries (Lt_i, Dt), keys (B,) -> sampler outputs
    for the B rows (numpy), in one call padded to a power-of-two batch."""
    n, b = video.shape[0], len(queries)
    bp = _batch_size(b)
    lv, lt = self.padded_length(n), self.config.data.max_q_l
    vf = np.zeros((bp, lv, video.shape[1]), np.float32)
    vf[:, :n] = video
    vm = np.zeros((bp, lv), np.float32)
    vm[:, :n] = 1
    qf = np.zeros((bp, lt, queries[0].shape[1]), np.float32)
    qm = np.zeros((bp, lt), np.float32)
    for i in range(bp):        # padding rows repeat the first query (outputs dropped)
      q = queries[i if i < b else 0]
      qf[i, :len(q)] = q
      qm[i, :len(q)] = 1
    keys = jnp.concatenate([keys, jnp.repeat(keys[:1], bp - b, axis=0)])
    out = jax.device_get(self._sample(self.params, jnp.asarray(vf), jnp.asarray(vm),
                                      jnp.asarray(qf), jnp.asarray(qm), keys))
    return {k: np.asarray(v)[:b] for k, v in out.items()}

  def predict(self, video_features: Union[np.ndarray, Sequence[np.ndarray], dict],
              query_features, duration: float,
              clip_len: Optional[float] = None) -> Union[dict, List[dict]]:
    """Ranked windows and clip saliency for one video and one query (or a list).

    Args:
      video_features: (L, D) clip features of one type, a list of per-type
        (L_i, D_i) arrays in `video_sources` order, or a dict {source name: array}
        (L2-normalized each, cut to the shortest, concatenated in the weights' order
        as the dataset builder does).
      query_features: (Lt, Dt) token features (truncated to `data.max_q_l`), or a
        list of such arrays: the queries then run as one batch.
      duration: video length in seconds; windows are clipped to [0, duration] and
        rounded to multiples of the clip length (`config.round_windows`).
      clip_len: seconds per clip; default: the training data's, else duration / L.
    Returns:
      {'pred_relevant_windows': [[start_s, end_s, score], ...] best first,
       'pred_saliency_scores': [one per clip]}; a list of them for a list of queries.
    """
    video = self._video(video_features)
    many = isinstance(query_features, (list, tuple))
    queries = [self._query(q) for q in (query_features if many else [query_features])]
    if not queries:
      raise ValueError('query_features is an empty list')
    if duration <= 0:
      raise ValueError(f'duration must be > 0, got {duration}')
    n = video.shape[0]
    clip_len = clip_len or self.config.data.get('clip_len') or duration / n
    keys = self._next_keys(len(queries))
    if windows_lib.uses_windows(self.config, n):
      results = self._predict_windows(video, queries, keys, duration, clip_len)
      return results if many else results[0]
    results = []
    for s in range(0, len(queries), MAX_BATCH):
      out = self._sample_rows(video, queries[s:s + MAX_BATCH], keys[s:s + MAX_BATCH])
      b = len(out['spans'])
      wins = postprocess.windows_from_spans(
          out['spans'], out['scores'], np.full(b, n * clip_len), np.full(b, duration),
          self.config.max_pred_windows, self.config.nms_threshold,
          postprocess.round_unit(self.config, clip_len))
      results += [{'pred_relevant_windows': w,
                   'pred_saliency_scores': out['saliency'][i, :n].round(4).tolist()}
                  for i, w in enumerate(wins)]
    return results if many else results[0]

  def _predict_windows(self, video: np.ndarray, queries: List[np.ndarray], keys,
                       duration: float, clip_len: float) -> List[dict]:
    """`predict` for a video (L, Dv) longer than `data.max_v_l`: rows (query q, window
    w) with key fold_in(keys[q], w), at most MAX_BATCH rows per sampler call; each
    query's windows merged (`windows.merge_windows`)."""
    s = windows_lib.settings(self.config)
    n = video.shape[0]
    starts = windows_lib.window_starts(n, s.size, s.overlap)
    cut = windows_lib.cut_windows(video, starts, s.size, self.config.data.use_tef)
    w = len(starts)
    fold = jax.vmap(jax.vmap(jax.random.fold_in, in_axes=(None, 0)), in_axes=(0, None))
    row_keys = fold(keys, jnp.arange(w)).reshape(len(queries) * w, *keys.shape[1:])
    lv, lt = self.padded_length(s.size), self.config.data.max_q_l
    outs = []
    for r0 in range(0, len(queries) * w, MAX_BATCH):
      rows = np.arange(r0, min(r0 + MAX_BATCH, len(queries) * w))
      bp = _batch_size(len(rows))
      rows_p = np.concatenate([rows, np.full(bp - len(rows), rows[0])])  # pad: first row
      vf = np.zeros((bp, lv, video.shape[1]), np.float32)
      vf[:, :s.size] = cut[rows_p % w]
      vm = np.zeros((bp, lv), np.float32)
      vm[:, :s.size] = 1
      qf = np.zeros((bp, lt, queries[0].shape[1]), np.float32)
      qm = np.zeros((bp, lt), np.float32)
      for i, r in enumerate(rows_p):
        q = queries[r // w]
        qf[i, :len(q)] = q
        qm[i, :len(q)] = 1
      out = jax.device_get(self._sample(self.params, jnp.asarray(vf), jnp.asarray(vm),
                                        jnp.asarray(qf), jnp.asarray(qm),
                                        row_keys[rows_p]))
      outs.append({k: np.asarray(out[k])[:len(rows)] for k in ('spans', 'scores', 'saliency')})
    out = {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}
    unit = postprocess.round_unit(self.config, clip_len)
    results = []
    for q in range(len(queries)):
      mine = slice(q * w, (q + 1) * w)
      sal = windows_lib.merge_saliency(out['saliency'][mine, :s.size], starts, n)
      wins = windows_lib.merge_windows(out['spans'][mine], out['scores'][mine], starts,
                                       s.size, clip_len, duration,
                                       self.config.max_pred_windows, s, unit, sal)
      results.append({'pred_relevant_windows': wins,
                      'pred_saliency_scores': sal.round(4).tolist()})
    return results

  def warm_up(self, num_clips: Optional[int] = None, batch: int = 1,
              backbones: bool = False) -> None:
    """Compiles the sampler for videos of `num_clips` (default: the smallest bucket)
    and `batch` queries (a video longer than `data.max_v_l`: its windows x `batch`
    rows), and with `backbones` the feature extractors and the text tower, on zeros;
    takes no sampling key (later answers are unchanged)."""
    num_clips = num_clips or 1
    if windows_lib.uses_windows(self.config, num_clips):
      s = windows_lib.settings(self.config)
      w = len(windows_lib.window_starts(num_clips, s.size, s.overlap))
      num_clips, batch = s.size, min(MAX_BATCH, batch * w)
    lv = self.padded_length(num_clips)
    bp, lt = _batch_size(batch), self.config.data.max_q_l
    zeros = lambda *shape: jnp.zeros(shape, jnp.float32)  # pylint: disable=unnecessary-lambda-assignment
    self._sample(self.params, zeros(bp, lv, self.config.video_dim), zeros(bp, lv),
                 zeros(bp, lt, self.config.text_dim), zeros(bp, lt),
                 jnp.stack([self._rng] * bp))['spans'].block_until_ready()
    if backbones:
      enc, names = self.encoders()
      for n in names:
        m, size = enc.models[n], enc.sizes[n]
        frames = (size, size, 3) if n == 'clip' else (int(m.num_frames), size, size, 3)
        enc.encode(n, np.zeros((1,) + frames, np.uint8))
      self.encode_queries(['warm up'])

  def encoders(self):
    """The workdir's backbones (loaded once), after checking them against the records
    of the features it was trained on; a mismatch raises ValueError naming both."""
    if self._encoders is not None:
      return self._encoders
    from momentdiff_jax.features import backbones as bb
    from momentdiff_jax.common import records
    rec = self.config.data.get('backbones')
    rec = rec.to_dict() if hasattr(rec, 'to_dict') else rec
    if not rec and self.video_sources:
      # Converted release checkpoints record only their feature dirs' names
      # (`clip_features`, ...): the backbones those names stand for, CLIP text assumed
      # (a text feature size other than the CLIP weights' is refused below).
      rec = {'video': [records.infer_record(s) for s in self.video_sources],
             'text': {'backbone': 'clip', 'inferred_from': 'assumed'}}
    if not rec:
      raise ValueError('this workdir records no feature backbones (trained on synthetic '
                       'data, or converted without a dataset): predict_video cannot tell '
                       'which backbones its features came from; use predict() on features')
    video_rec, text_rec = rec['video'], rec.get('text') or {}
    names = [r.get('backbone') for r in video_rec]
    if None in names or text_rec.get('backbone') != 'clip':
      raise ValueError('the workdir\'s dataset was built from features of unknown origin '
                       f'(video: [{", ".join(map(records.describe, video_rec))}], text: '
                       f'{records.describe(text_rec)}); predict_video extracts only '
                       f'{", ".join(records.NAMES)} video and CLIP text features')
    need = sorted(set(names) | {'clip'})
    missing = [n for n in need if not self.weights[n]]
    if missing:
      raise ValueError(f'the workdir was trained on [{", ".join(names)}] video features and '
                       f'CLIP text features: give {" and ".join(f"{n}_weights" for n in missing)}')
    # SlowFast sees as many frames per clip, at the crop, as the dataset's extraction.
    sf = next((r for r in video_rec if r.get('backbone') == 'slowfast'), {})
    enc = bb.Encoders(need, self.weights['clip'], self.weights['slowfast'],
                      slowfast_frames=int(sf.get('frames_per_clip') or 32),
                      slowfast_crop=int(sf.get('crop') or 224))
    given = [enc.records[n] for n in names]
    text_given = dict(enc.records['clip'], feature_dim=enc.models['clip'].text_width)
    problems = records.mismatches(video_rec, given)
    if enc.models['clip'].text_width != self.config.text_dim:
      problems.append(f'the model takes {self.config.text_dim}-d query features, the CLIP '
                      f'text tower gives {enc.models["clip"].text_width}')
    problems += [p.replace('clip:', 'clip (text):', 1)
                 for p in records.mismatches([text_rec], [text_given])]
    if problems:
      raise ValueError('backbones differ from those of the workdir\'s dataset: '
                       + '; '.join(problems))
    _warn_unchecked(video_rec, text_rec, enc)
    self._encoders = (enc, names)
    return self._encoders

  def encode_video(self, path: str,
                   progress: Optional[Callable[[float], None]] = None) -> VideoFeatures:
    """Decodes `path` once and extracts its clip features with the workdir's backbones.

    `progress(fraction)` is called as clips are encoded (fraction of the duration).
    Raises VideoError (a ValueError) for an unreadable file or one without frames.
    """
    from momentdiff_jax.features import extract
    from momentdiff_jax.features import video as video_lib
    clip_len = self.config.data.get('clip_len')
    if not clip_len:
      raise ValueError('the workdir\'s dataset has no fixed clip length (pooled features): '
                       'predict_video needs one')
    enc, names = self.encoders()
    info = video_lib.probe(path)
    feats = extract.video_features(path, enc, clip_len, progress=progress,
                                   duration=info.duration)
    n = min(len(feats[k]) for k in names)
    duration = info.duration if info.duration and info.duration > 0 else n * clip_len
    return VideoFeatures([feats[k] for k in names], float(duration), float(clip_len), path)

  def encode_queries(self, texts: Sequence[str]) -> List[np.ndarray]:
    """Sentences -> CLIP text token features (Lt_i, Dt), each encoded alone (a query's
    features do not depend on the others)."""
    for q in texts:
      if not isinstance(q, str) or not q.strip():
        raise ValueError(f'a query must be a non-empty string, got {q!r}')
    enc, _ = self.encoders()
    return [enc.encode_queries([q], batch_size=1)[0] for q in texts]

  def predict_features(self, video: VideoFeatures,
                       query: Union[str, Sequence[str]]) -> Union[dict, List[dict]]:
    """Moment retrieval for one sentence (or a list, one batch) on encoded features.

    Returns {'video', 'query', 'duration', 'pred_relevant_windows': [[start_s, end_s,
    score], ...] best first, 'pred_saliency_scores': [one per clip]}; for a list of
    sentences, a list of such dicts in the same order.
    """
    many = not isinstance(query, str)
    texts = list(query) if many else [query]
    if not texts:
      raise ValueError('no query given (an empty list)')
    outs = self.predict(video.features, self.encode_queries(texts), video.duration,
                        video.clip_len)
    res = [{'video': video.path, 'query': q, 'duration': round(float(video.duration), 4),
            **o} for q, o in zip(texts, outs)]
    return res if many else res[0]

  def predict_video(self, path: str,
                    query: Union[str, Sequence[str]]) -> Union[dict, List[dict]]:
    """Moment retrieval from a video file and a sentence, or a list of sentences (the
    video is decoded and encoded once; the queries run as one batch).

    Returns {'video', 'query', 'duration', 'pred_relevant_windows': [[start_s, end_s,
    score], ...] best first, 'pred_saliency_scores': [one per clip]}, or a list of
    such dicts in the order of the queries.
    """
    texts = [query] if isinstance(query, str) else list(query)
    for q in texts:     # refused before the video is decoded
      if not isinstance(q, str) or not q.strip():
        raise ValueError(f'query must be a non-empty string, got {q!r}')
    if not texts:
      raise ValueError('no query given (an empty list)')
    return self.predict_features(self.encode_video(path), query)
