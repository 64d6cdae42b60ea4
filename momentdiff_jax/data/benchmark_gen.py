"""The accuracy benchmark's data: real windows, features from a known process, an oracle.

Every video and window comes from a real annotation row (`benchmark_rows.py`:
Charades-STA, QVHighlights, TACoS durations and windows, several queries per video).
The features are generated so that the best attainable score is known:

* Events. Each distinct window set of a video is one event with an action class
  (`num_families` families of `classes_per_family` classes; concept vectors of one
  family have cosine `family_rho`, i.e. "open the door" vs "close the door"). The
  other events of a video are drawn from the video's family with probability
  `same_family_share`: the distractors look like the target.
* Soft boundaries. Annotators disagree: the event the features show is the annotated
  window moved by Gaussian noise (std `jitter_rel` x its length + `jitter_clips` clips
  on each end); metrics use the annotated window.
* Clips. A video of duration d has L = min(max_clips, round(d / base clip length))
  clips (pooled: clip length d / L). Clip i's latent mean (k = `latent_dim`) is the
  video's scene vector plus `amplitude` x the concept of every event whose true extent
  holds the clip's center. Each feature block (e.g. SlowFast 2304-d, CLIP 512-d) is
  `gain x mean @ W_b + sigma_b,v x N(0, I)` with W_b (k, D_b) orthonormal rows and a
  per-video noise level sigma_b,v (log-normal spread: some videos are much harder),
  then L2-normalized per block as real features are.
* Queries. Tokens are filler-word vectors plus the class's word (one of
  `synonyms`) and, half of the time, its family's word, from an independent random
  "text encoder", plus noise: the model must learn which word goes with which video
  direction.

The oracle knows the process and each query's latent variables (class, scene, noise
levels, the share of clips other events cover) but not the other events' classes or
extents, nor the annotators' noise. Projected on W_b the noise is exactly
N(0, sigma^2 I_k), so the per-clip log-likelihood ratio of "inside the target" vs
"outside" is exact under its per-clip model (one possible distractor per clip, of a
class drawn from the prior), and the maximum-likelihood window is the contiguous run
of clips with the largest LLR sum (`best_segments`, O(L^2)). It is a strong reference,
not a proof of optimality: it treats clips as independent given the segment and
predicts the true event, not the annotators' jittered copy.
"""
import os
from typing import Optional

import numpy as np

from momentdiff_jax.data import benchmark_rows

VERSION = 'mdbench_g2'
V1 = dict(video_dims=(2304, 512), gains=(1.0, 0.7), noise=(0.35, 0.45), noise_spread=0.35,
          text_dim=512, latent_dim=32, num_families=6, classes_per_family=4,
          family_rho=0.5, same_family_share=0.7, amplitude=1.0, scene=1.0,
          jitter_rel=0.08, jitter_clips=0.25, synonyms=2, num_fillers=200,
          token_noise=0.1, base_clip=dict(charades=1.0, qvhighlights=2.0, tacos=2.0),
          max_clips=64, seed=2023)
# A second, differently made variant: C3D-like single 1024-d block, GloVe-like 300-d
# text, more classes, tighter families, more annotator noise.
V2 = dict(V1, video_dims=(1024,), gains=(1.0,), noise=(0.4,), noise_spread=0.25,
          text_dim=300, latent_dim=24, num_families=8, classes_per_family=4,
          family_rho=0.6, same_family_share=0.6, jitter_rel=0.12, jitter_clips=0.25,
          synonyms=2, token_noise=0.15, seed=7)
# A third, where finding the moment is easy to learn and its boundaries are not: few
# classes (2 families x 2, one word each), low feature noise, and annotators who
# disagree twice as much as in v1 (15% of the length plus half a clip per end). The
# regime of real benchmarks once a model has learned to ground the query (the release
# reaches most of the attainable R1@0.5 but not of R1@0.7), reachable in a CPU budget.
V3 = dict(V1, num_families=2, classes_per_family=2, synonyms=1, noise=(0.2, 0.25),
          noise_spread=0.25, family_rho=0.3, same_family_share=0.5, jitter_rel=0.15,
          jitter_clips=0.5, seed=11)
VARIANTS = {'v1': V1, 'v2': V2, 'v3': V3}


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def make_world(p: dict) -> dict:
  """The fixed random parts: concepts (K, k), projections, word tables."""
  rng = np.random.default_rng([p['seed'], 0])
  k, nf, cpf = p['latent_dim'], p['num_families'], p['classes_per_family']
  fam = _unit(rng.normal(size=(nf, k)))
  own = _unit(rng.normal(size=(nf, cpf, k)))
  r = p['family_rho']
  # Unit vectors with cosine ~rho inside a family (exactly rho for orthogonal parts).
  concepts = _unit(np.sqrt(r) * fam[:, None] + np.sqrt(1 - r) * own).reshape(nf * cpf, k)
  proj = [np.linalg.qr(rng.normal(size=(d, k)))[0].T for d in p['video_dims']]  # (k, D)
  td = p['text_dim']
  return dict(concepts=concepts, family=np.repeat(np.arange(nf), cpf), proj=proj,
              words=rng.normal(size=(nf * cpf, p['synonyms'], td)) / np.sqrt(td),
              fam_words=rng.normal(size=(nf, td)) / np.sqrt(td),
              fillers=rng.normal(size=(p['num_fillers'], td)) / np.sqrt(td))


def distractor_prior(world: dict, p: dict, target: int) -> np.ndarray:
  """(K,) prior of a distractor's class given the target's class (0 at the target)."""
  fam = world['family']
  same = (fam == fam[target]) & (np.arange(len(fam)) != target)
  other = fam != fam[target]
  s = p['same_family_share']
  prior = np.where(same, s / max(same.sum(), 1), 0.0) + np.where(
      other, (1 - s) / max(other.sum(), 1), 0.0)
  return prior / prior.sum()


def _event_classes(rng, world, p, n_events: int) -> np.ndarray:
  """Classes of a video's events: from the video's family w.p. same_family_share,
  distinct while the family has classes left."""
  nf, cpf = p['num_families'], p['classes_per_family']
  f = int(rng.integers(nf))
  out = []
  for _ in range(n_events):
    pool = (np.arange(f * cpf, (f + 1) * cpf) if rng.random() < p['same_family_share']
            else np.flatnonzero(world['family'] != f))
    free = np.setdiff1d(pool, out)
    out.append(int(rng.choice(free if len(free) else pool)))
  return np.asarray(out)


def _membership(true_windows, n: int, clip: float) -> np.ndarray:
  """(L,) bool: clips whose center lies in one of the windows (nearest clip at least)."""
  centers = (np.arange(n) + 0.5) * clip
  m = np.zeros(n, bool)
  for s, e in true_windows:
    inside = (centers >= s) & (centers < e)
    if not inside.any():
      inside[min(n - 1, max(0, int((s + e) / 2 / clip)))] = True
    m |= inside
  return m


def generate_instance(rng, world, p, rows: list) -> dict:
  """One video: raw feature blocks, latent truth and the query list of `rows`."""
  dur = float(rows[0]['duration'])
  n = int(min(p['max_clips'], max(4, round(dur / p['base_clip'][rows[0]['src']]))))
  clip = dur / n
  keys = sorted({str(r['windows']) for r in rows}, key=[str(r['windows']) for r in rows].index)
  classes = _event_classes(rng, world, p, len(keys))
  k = p['latent_dim']
  scene = p['scene'] * _unit(rng.normal(size=k))
  member = []
  for key in keys:
    wins = next(r['windows'] for r in rows if str(r['windows']) == key)
    true = []
    for s, e in wins:
      sd = p['jitter_rel'] * (e - s) + p['jitter_clips'] * clip
      a, b = s + sd * rng.normal(), e + sd * rng.normal()
      a, b = np.clip(sorted((a, b)), 0.0, dur)
      true.append((a, max(b, a + 0.5 * clip)))
    member.append(_membership(true, n, clip))
  member = np.stack(member)                                     # (E, L)
  mean = scene + p['amplitude'] * member.T.astype(float) @ world['concepts'][classes]
  sig = [s * float(np.exp(p['noise_spread'] * rng.normal())) for s in p['noise']]
  raw = [g * mean @ w + s * rng.normal(size=(n, w.shape[1]))
         for g, s, w in zip(p['gains'], sig, world['proj'])]
  video = np.concatenate([_unit(x) for x in raw], axis=1).astype(np.float32)
  # Projections on W_b: the oracle's sufficient statistics, noise exactly N(0, s^2 I_k).
  latent = [x @ w.T for x, w in zip(raw, world['proj'])]
  event_of = [keys.index(str(r['windows'])) for r in rows]
  return dict(video=video, latent=latent, raw_blocks=raw, sigma=sig, scene=scene, member=member,
              classes=classes, event_of=event_of, num_clips=n, clip=clip, duration=dur)


def query_tokens(rng, world, p, cls: int) -> np.ndarray:
  """(n_tok, Dt): fillers, the class word, maybe the family word, plus noise."""
  n_tok = int(rng.integers(6, 15))
  tok = world['fillers'][rng.integers(0, p['num_fillers'], size=n_tok)].copy()
  pos = rng.permutation(n_tok)
  tok[pos[0]] = world['words'][cls, rng.integers(p['synonyms'])]
  if rng.random() < 0.5:
    tok[pos[1]] = world['fam_words'][world['family'][cls]]
  noise = p['token_noise'] * rng.normal(size=tok.shape) / np.sqrt(tok.shape[1])
  return (tok + noise).astype(np.float32)


def clip_llr(inst: dict, world, p, event: int) -> np.ndarray:
  """(L,) exact per-clip log p(clip | inside event) - log p(clip | outside) under the
  oracle's model (see the module docstring)."""
  from scipy.special import logsumexp
  cls = int(inst['classes'][event])
  others = np.delete(inst['member'], event, axis=0)
  pi = float(np.clip(others.any(0).mean() if len(others) else 0.0, 1e-3, 1 - 1e-3))
  prior = distractor_prior(world, p, cls)
  a, c = p['amplitude'], world['concepts']
  base_out = inst['scene'][None]                                   # (1, k)
  base_in = base_out + a * c[cls][None]
  dis = a * c                                                      # (K, k)

  def loglik(base):  # (L,) log[(1 - pi) N(base) + pi sum_d prior_d N(base + dis_d)]
    means = np.concatenate([base, base + dis], 0)                  # (1 + K, k)
    ll = 0.0
    for g, s, y in zip(p['gains'], inst['sigma'], inst['latent']):   # y (L, k)
      m = g * means
      d2 = (y * y).sum(-1)[:, None] - 2 * y @ m.T + (m * m).sum(-1)[None]  # (L, 1 + K)
      ll = ll - d2 / (2 * s * s)
    logw = np.log(np.concatenate([[1 - pi], pi * np.maximum(prior, 1e-300)]))
    return logsumexp(ll + logw[None], axis=1)

  return loglik(base_in) - loglik(base_out)


def best_segments(llr: np.ndarray, top_k: int = 5, nms: float = 0.5) -> list:
  """Clip segments [s, e) by LLR sum, best first, greedy NMS at IoU > nms.

  llr (L,). Returns [(s, e, sum)] (at most top_k). O(L^2) over all segments.
  """
  n = len(llr)
  cs = np.concatenate([[0.0], np.cumsum(llr)])
  s, e = np.triu_indices(n + 1, k=1)
  score = cs[e] - cs[s]
  out = []
  for i in np.argsort(-score, kind='stable'):
    a, b = int(s[i]), int(e[i])
    if all(max(0, min(b, y) - max(a, x)) / (max(b, y) - min(a, x)) <= nms for x, y, _ in out):
      out.append((a, b, float(score[i])))
      if len(out) == top_k:
        break
  return out


def oracle_prediction(inst, world, p, event: int, row: dict) -> dict:
  """The oracle's ranked windows (seconds) for one query, as a prediction row."""
  segs = best_segments(clip_llr(inst, world, p, event))
  wins = [[round(a * inst['clip'], 4), round(min(b * inst['clip'], inst['duration']), 4),
           round(sc, 4)] for a, b, sc in segs]
  return {'qid': row['qid'], 'vid': row['vid'], 'pred_relevant_windows': wins}


def generate(variant: str = 'v1', rows: Optional[list] = None, **overrides):
  """Yields (split, writer example, oracle prediction or None) for every row."""
  p = dict(VARIANTS[variant], **overrides)
  world = make_world(p)
  rows = rows if rows is not None else benchmark_rows.load_rows()
  groups = benchmark_rows.group_instances(rows)
  qid = 0
  for si, split in enumerate(('train', 'val', 'test')):
    for ii, (inst_name, irows) in enumerate(groups[split]):
      rng = np.random.default_rng([p['seed'], si + 1, ii])
      inst = generate_instance(rng, world, p, irows)
      for r, ev in zip(irows, inst['event_of']):
        cls = int(inst['classes'][ev])
        row = {'qid': qid, 'query': f'class{cls} ({r["src"]} {r["qid"]})', 'vid': inst_name,
               'duration': inst['duration'], 'relevant_windows': r['windows'],
               'source': r['src']}
        ex = {'video': inst['video'], 'query': query_tokens(rng, world, p, cls),
              'windows': np.asarray(r['windows'], np.float32), 'duration': inst['duration'],
              'time_scale': inst['duration'], 'row': row}
        oracle = None if split == 'train' else oracle_prediction(inst, world, p, ev, row)
        yield split, ex, oracle
        qid += 1


def write_benchmark(output_dir: str, variant: str = 'v1', feature_dtype: str = 'float16',
                    rows: Optional[list] = None, **overrides) -> str:
  """Writes the dataset (atomic) plus `oracle_<split>_preds.jsonl`; returns the dir."""
  import json
  from momentdiff_jax.data import store
  writer = store.DatasetWriter(output_dir, feature_dtype=feature_dtype)
  oracle = {'val': [], 'test': []}
  with writer:
    for split, ex, orc in generate(variant, rows, **overrides):
      writer.add(split, ex)
      if orc is not None:
        oracle[split].append(orc)
    for split, preds in oracle.items():
      with open(os.path.join(writer.tmp, f'oracle_{split}_preds.jsonl'), 'w') as f:
        f.writelines(json.dumps(x) + '\n' for x in preds)
    p = dict(VARIANTS[variant], **overrides)
    p['base_clip'] = dict(p['base_clip'])
    return writer.commit({'clip_len': None, 'pool_clips': p['max_clips'],
                          'normalize_video': True, 'text_key': 'last_hidden_state',
                          'benchmark': dict(p, variant=variant, version=VERSION),
                          'sources': {'generator': f'momentdiff_jax.data.benchmark_gen '
                                                   f'{VERSION} {variant}'}})


def ensure_benchmark(variant: str = 'v1', root: str = '') -> str:
  """The cached benchmark dataset of `variant`, generated on first use."""
  from momentdiff_jax.data import synthetic
  root = root or os.path.dirname(synthetic.cache_dir())
  path = os.path.join(root, f'{VERSION}_{variant}')
  if os.path.exists(os.path.join(path, 'metadata.json')):
    return path
  try:
    return write_benchmark(path, variant)
  except FileExistsError:
    if os.path.exists(os.path.join(path, 'metadata.json')):
      return path
    raise
