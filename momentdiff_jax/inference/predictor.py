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

Videos of any length are padded to a length bucket (the config's buckets, then
multiples of the largest), so a handful of programs serve every call; the compiled
sampler (condition once, one scan over the DDIM steps) is reused across calls.

From a video file and a sentence (features extracted on the fly, with the backbones
the workdir's dataset was built with; a different backbone is refused by name):

    p = Predictor.from_workdir('workdirs/qvh_clip', clip_weights='clip-vit-base-patch32')
    p.predict_video('video.mp4', 'a man opens the door')
    # {'video', 'query', 'duration', 'pred_relevant_windows', 'pred_saliency_scores'}
"""
import warnings
from typing import Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from momentdiff_jax.data.examples import append_tef
from momentdiff_jax.data.sources import combine_video_types, l2_normalize
from momentdiff_jax.inference import postprocess
from momentdiff_jax.inference import sampling
from momentdiff_jax.ops import diffusion
from momentdiff_jax.run import workdir as workdir_lib


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
    self.config = config
    self.params = params
    self.model = workdir_lib.create_model(config, config.video_dim, config.text_dim)
    self.sampling_steps = int(sampling_steps or config.diffusion.sampling_steps)
    self._sample = jax.jit(sampling.make_sample_fn(self.model, config,
                                             diffusion.make_schedule(config.diffusion),
                                             self.sampling_steps))
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
    config, _, params, _, _ = workdir_lib.restore_model(workdir, checkpoint, replica=replica)
    return cls(config, params, sampling_steps, seed, clip_weights, slowfast_weights)

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

  def predict(self, video_features: Union[np.ndarray, Sequence[np.ndarray], dict],
              query_features: np.ndarray, duration: float,
              clip_len: Optional[float] = None) -> dict:
    """Ranked windows and clip saliency for one video and one query.

    Args:
      video_features: (L, D) clip features of one type, a list of per-type
        (L_i, D_i) arrays in `video_sources` order, or a dict {source name: array}
        (L2-normalized each, cut to the shortest, concatenated in the weights' order
        as the dataset builder does).
      query_features: (Lt, Dt) token features (truncated to `data.max_q_l`).
      duration: video length in seconds; windows are clipped to [0, duration] and
        rounded to multiples of the clip length (`config.round_windows`).
      clip_len: seconds per clip; default: the training data's, else duration / L.
    Returns:
      {'pred_relevant_windows': [[start_s, end_s, score], ...] best first,
       'pred_saliency_scores': [one per clip]}.
    """
    video = self._video(video_features)
    n = video.shape[0]
    query = np.asarray(query_features, np.float32)
    if query.ndim != 2 or query.shape[0] == 0 or query.shape[1] != self.config.text_dim:
      raise ValueError(f'query_features must be (num_tokens > 0, {self.config.text_dim}), '
                       f'got {query.shape}')
    if not np.all(np.isfinite(query)):
      raise ValueError('query features contain NaN or Inf')
    if duration <= 0:
      raise ValueError(f'duration must be > 0, got {duration}')
    query = query[:self.config.data.max_q_l]
    if self.config.data.get('normalize_text', True):
      query = l2_normalize(query)
    lv, lt = self.padded_length(n), self.config.data.max_q_l
    vf = np.zeros((1, lv, video.shape[1]), np.float32)
    vf[0, :n] = video
    vm = np.zeros((1, lv), np.float32)
    vm[0, :n] = 1
    qf = np.zeros((1, lt, query.shape[1]), np.float32)
    qf[0, :len(query)] = query
    qm = np.zeros((1, lt), np.float32)
    qm[0, :len(query)] = 1
    rng = jax.random.fold_in(self._rng, self._calls)
    self._calls += 1
    out = jax.device_get(self._sample(self.params, jnp.asarray(vf), jnp.asarray(vm),
                                      jnp.asarray(qf), jnp.asarray(qm), rng))
    clip_len = clip_len or self.config.data.get('clip_len') or duration / n
    wins = postprocess.windows_from_spans(
        out['spans'], out['scores'], np.asarray([n * clip_len]), np.asarray([duration]),
        self.config.max_pred_windows, self.config.nms_threshold,
        postprocess.round_unit(self.config, clip_len))[0]
    return {'pred_relevant_windows': wins,
            'pred_saliency_scores': np.asarray(out['saliency'][0, :n]).round(4).tolist()}

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

  def predict_video(self, path: str, query: str) -> dict:
    """Moment retrieval from a video file and a sentence.

    Returns {'video', 'query', 'duration', 'pred_relevant_windows': [[start_s, end_s,
    score], ...] best first, 'pred_saliency_scores': [one per clip]}.
    """
    from momentdiff_jax.features import extract
    from momentdiff_jax.features import video as video_lib
    if not isinstance(query, str) or not query.strip():
      raise ValueError(f'query must be a non-empty string, got {query!r}')
    clip_len = self.config.data.get('clip_len')
    if not clip_len:
      raise ValueError('the workdir\'s dataset has no fixed clip length (pooled features): '
                       'predict_video needs one')
    enc, names = self.encoders()
    info = video_lib.probe(path)
    feats = extract.video_features(path, enc, clip_len)
    text = enc.encode_queries([query], batch_size=1)[0]
    n = min(len(feats[k]) for k in names)
    duration = info.duration if info.duration and info.duration > 0 else n * clip_len
    out = self.predict([feats[k] for k in names], text, duration, clip_len)
    return {'video': path, 'query': query, 'duration': round(float(duration), 4), **out}
