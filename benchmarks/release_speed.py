"""The authors' PyTorch release, timed at the Charades-STA SlowFast+CLIP shapes of speed.py.

  python benchmarks/release_speed.py [--output=release.json] [--threads=2]
      [--train_batch=32] [--infer_batch=64] [--steps=10,50] [--annotations=DIR] [--tiny]

Runs the release's own code from MOMENTDIFF_RELEASE_DIR (default: ../shared/release beside
the repository, when that folder exists):
- options: its argparse parser (`config.BaseOptions`) given the flags of
  `scripts/train_charades_sf.sh` (v_feat_dim 2816 + 2 TEF, t_feat_dim 512, bsz 32, lr 2e-4,
  clip_length 1, lw_saliency 4, max_v_l -1), with the derived fields its `parse()` sets;
- model, criterion, AdamW and StepLR: `inference.setup_model(opt)`;
- training: `train.train_epoch` on one batch per call (their prepare_batch_inputs, forward
  with targets, SetCriterion with Hungarian matching, weighted loss sum, backward,
  clip_grad_norm_ 0.1, AdamW step, per-loss float() logging);
- inference: `model(None, **inputs)` in eval mode under no_grad (encoder, negative pass and
  the whole DDIM loop, as `compute_mr_results` calls it), with the transformer's
  `sampling_timesteps` set to each step count (their Transformer hard-codes 10).
Batches come from their `StartEndDataset` reading generated feature files (random values)
of the lengths speed.py uses (`speed_inputs.load_lengths`: ceil(duration) clips at 1 clip/s;
max_v_l -1 drops the last clip, as in the release), collated by `start_end_collate`:
training batches of random rows (DataLoader(shuffle=True)), inference batches of
consecutive test rows (shuffle=False: the test file's order with `--annotations`, else
the shipped table's rows in a random order), each padded to its longest video; the timed
batches are picked at evenly spaced quantiles of their padded length (pick_rows).

Patched at run time only, the files are never edited: `torch.Tensor.cuda` returns the
tensor (they hard-code .cuda()), `momentdiff.transformer` gets the `random` module it
uses without importing, and imports that nothing run here uses are stubbed when absent
(`torch.utils.tensorboard`, pandas for `dict_to_markdown`, sklearn for the standalone
eval's precision-recall).
JSON keys as speed.py's where they mean the same: `train_examples_per_s`,
`infer_queries_per_s` (keyed by step count), `device`; plus per-call times, padded
lengths, torch version, threads and a 2048^2 float32 matmul's GFLOP/s in torch.
"""
import importlib.machinery
import json
import logging
import os
import random
import sys
import tempfile
import time
import types

from absl import flags
import numpy as np

import speed_inputs   # a sibling: this folder is sys.path[0]
import report   # a sibling: this folder is sys.path[0]
from momentdiff_jax.common import app

os.environ.setdefault('TQDM_DISABLE', '1')   # their loops wrap batches in tqdm
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE_DIR_ENV = 'MOMENTDIFF_RELEASE_DIR'
DEFAULT_RELEASE_DIR = os.path.join(ROOT, '..', 'shared', 'release')
# scripts/train_charades_sf.sh, plus CPU and no worker processes.
CHARADES_FLAGS = ['--dset_name', 'charades', '--ctx_mode', 'video_tef', '--v_feat_dim', '2816',
                  '--t_feat_dim', '512', '--bsz', '32', '--seed', '42', '--lr', '0.0002',
                  '--lr_drop', '40', '--clip_length', '1', '--lw_saliency', '4.0',
                  '--giou_loss_coef', '1.0', '--max_v_l', '-1', '--exp_id', 'bench',
                  '--device', '-1', '--num_workers', '0', '--no_pin_memory']
CLIP_DIM, SLOWFAST_DIM, TEXT_DIM = 512, 2304, 512


def release_dir():
  """$MOMENTDIFF_RELEASE_DIR, else ../shared/release beside the repository: (path, None),
  or (None, the reason) when no release is there."""
  path = os.environ.get(RELEASE_DIR_ENV) or DEFAULT_RELEASE_DIR
  if not os.path.isfile(os.path.join(path, 'momentdiff', 'model.py')):
    return None, (f'no authors\' release at {os.path.normpath(path)} (no momentdiff/model.py '
                  f'there): set {RELEASE_DIR_ENV} to a checkout of IMCCretrieval/MomentDiff '
                  '(the folder holding momentdiff/ and utils/)')
  return os.path.abspath(path), None


# Imported at the top of their modules but used only by code this benchmark never runs
# (tensorboard logging, dict_to_markdown, the standalone eval's precision-recall).
OPTIONAL_IMPORTS = ('torch.utils.tensorboard', 'pandas', 'sklearn', 'sklearn.metrics')


def _stub_module(name: str) -> types.ModuleType:
  """A module whose every attribute is a callable that says it is a stub when called."""
  mod = types.ModuleType(name)
  mod.__path__ = []   # a package with nothing in it: its submodules get stubs too
  # A spec without origin: torch._dynamo's find_spec of third-party names accepts it.
  mod.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)

  def getattr_(attr):
    if attr.startswith('__'):
      raise AttributeError(attr)

    def stub(*a, **k):
      raise RuntimeError(f'{name}.{attr} is a stub of release_speed.py ({name} not installed)')
    return stub

  mod.__getattr__ = getattr_
  return mod


def import_release(path: str):
  """(torch, their modules) with the run-time patches of the module docstring."""
  import torch
  torch.Tensor.cuda = lambda self, *a, **k: self   # hard-coded .cuda() -> stay on CPU
  for name in OPTIONAL_IMPORTS:
    try:
      __import__(name)
    except ImportError:   # imported at their module level, never called on this path
      sys.modules[name] = _stub_module(name)
  sys.path.insert(0, path)
  from momentdiff import transformer as tr_mod   # pylint: disable=import-outside-toplevel
  tr_mod.random = random   # prepare_diffusion_concat shuffles with it (> N_r windows)
  from momentdiff import config, inference, start_end_dataset, train   # pylint: disable=import-outside-toplevel
  logging.getLogger('momentdiff').setLevel(logging.WARNING)
  return torch, types.SimpleNamespace(config=config, inference=inference, train=train,
                                      data=start_end_dataset)


def release_opt(rel, torch, workdir: str):
  """Their options for Charades SF+C, as `BaseOptions.parse()` completes them."""
  opts = rel.config.BaseOptions()
  opts.initialize()
  opt = opts.parser.parse_args(CHARADES_FLAGS)
  opt.device = torch.device('cpu')
  opt.pin_memory = False
  opt.use_tef, opt.use_video = True, True
  opt.v_feat_dim += 2   # TEF
  opt.results_dir = workdir
  opt.train_log_filepath = os.path.join(workdir, 'train.log.txt')
  opt.train_log_txt_formatter = '{time_str} [Epoch] {epoch:03d} [Loss] {loss_str}\n'  # train()
  return opt


def write_examples(workdir, rng, clips, query_lens, split):
  """Feature files + jsonl rows in the Moment-DETR layout their dataset reads.

  clips: (N,) clip counts (files hold that many; max_v_l -1 drops the last at read);
  query_lens: (N,) tokens. Windows: one per row, 10-40% of the video.
  """
  dirs = {k: os.path.join(workdir, k) for k in ('clip', 'slowfast', 'text')}
  for d in dirs.values():
    os.makedirs(d, exist_ok=True)
  rows = []
  for i, (n, lq) in enumerate(zip(clips, query_lens)):
    vid, qid = f'{split}{i}', len(rows) + (0 if split == 'train' else 10 ** 6)
    for key, dim in (('clip', CLIP_DIM), ('slowfast', SLOWFAST_DIM)):
      # float16 on disk (half the bytes); their loader reads it as float32.
      np.savez(os.path.join(dirs[key], f'{vid}.npz'),
               features=rng.standard_normal((n, dim)).astype(np.float16))
    np.savez(os.path.join(dirs['text'], f'qid{qid}.npz'),
             last_hidden_state=rng.standard_normal((lq, TEXT_DIM)).astype(np.float16))
    st = float(rng.uniform(0, 0.7) * n)
    ed = float(min(n, st + rng.uniform(0.1, 0.4) * n))
    rows.append(dict(qid=qid, query='q', vid=vid, duration=float(n), relevant_windows=[[st, ed]]))
  path = os.path.join(workdir, f'{split}.jsonl')
  with open(path, 'w') as f:
    f.writelines(json.dumps(r) + '\n' for r in rows)
  return path, [dirs['clip'], dirs['slowfast']], dirs['text']


def release_batches(rel, opt, workdir, rng, clips, query_lens, split, batch):
  """Collated batches (their (meta, model_inputs) pairs) of `batch` rows each."""
  path, v_dirs, t_dir = write_examples(workdir, rng, clips, query_lens, split)
  ds = rel.data.StartEndDataset(
      dset_name=opt.dset_name, data_path=path, v_feat_dirs=v_dirs, q_feat_dir=t_dir,
      q_feat_type='last_hidden_state', max_q_l=opt.max_q_l, max_v_l=opt.max_v_l,
      ctx_mode=opt.ctx_mode, normalize_v=not opt.no_norm_vfeat,
      normalize_t=not opt.no_norm_tfeat, clip_len=opt.clip_length,
      max_windows=opt.max_windows, span_loss_type=opt.span_loss_type, txt_drop_ratio=0)
  return [rel.data.start_end_collate([ds[i] for i in range(k, k + batch)])
          for k in range(0, len(ds), batch)]


def _stratified(padded, n: int):
  """Indices of `n` of the candidates at the (i + 0.5) / n quantiles of their padded length,
  so a few timed batches stand for the whole distribution (its long tail included)."""
  order = np.argsort(padded, kind='stable')
  return order[((np.arange(n) + 0.5) / n * len(order)).astype(int)]


def pick_rows(rng, lengths, args):
  """Rows of the warm-up batch then of the timed ones, and each pool's mean padded length.

  Training batches are random rows (DataLoader(shuffle=True)): 2,000 candidate batches,
  the timed ones at quantiles of their padded length. Inference batches are consecutive
  test rows (shuffle=False): every such batch of the test file is a candidate. A video of
  c clips is padded as c - 1 (max_v_l -1 drops the last clip); at least 2 clips.
  """
  tr_clips, te_clips = (np.maximum(lengths[k], 2) for k in ('train_clips', 'test_clips'))
  cand = rng.choice(len(tr_clips), (2000, args.train_batch))
  tr_pad = tr_clips[cand].max(1) - 1
  tr_pick = np.concatenate([_stratified(tr_pad, 1), _stratified(tr_pad, args.train_iters)])
  n_chunks = len(te_clips) // args.infer_batch
  chunks = np.arange(n_chunks)[:, None] * args.infer_batch + np.arange(args.infer_batch)
  te_pad = te_clips[chunks].max(1) - 1
  te_pick = np.concatenate([_stratified(te_pad, 1), _stratified(te_pad, args.infer_iters)])
  tr, te = cand[tr_pick].ravel(), chunks[te_pick].ravel()
  return ((tr_clips[tr], lengths['train_query_len'][tr]),
          (te_clips[te], lengths['test_query_len'][te]),
          (float(tr_pad.mean()), float(te_pad.mean())))


def matmul_gflops(torch, n=2048, iters=5):
  a = torch.ones((n, n), dtype=torch.float32)
  a @ a
  t = time.perf_counter()
  for _ in range(iters):
    a @ a
  return 2 * n ** 3 * iters / (time.perf_counter() - t) / 1e9


def time_train(rel, torch, opt, model, criterion, optimizer, batches, log):
  """Seconds per train_epoch call of one batch each; the first call is a warm-up."""
  tb = types.SimpleNamespace(add_scalar=lambda *a, **k: None)
  times = []
  for i, b in enumerate(batches):
    t = time.perf_counter()
    rel.train.train_epoch(model, criterion, [b], optimizer, opt, i, tb)
    times.append(time.perf_counter() - t)
    log(f'  train batch {i}: {times[-1]:.3f} s (padded to {b[1]["video_feat"][0].shape[1]} '
        f'clips){" warm-up" if i == 0 else ""}')
  return times[1:]


def time_infer(rel, torch, opt, model, batches, steps, log, warm_up: bool):
  """Seconds per model(None, ...) call at `steps` DDIM steps on batches[1:]; batches[0]
  is a warm-up call when `warm_up` (the first step count), else skipped."""
  model.eval()
  model.transformer.sampling_timesteps = steps
  times = []
  with torch.no_grad():
    for i, b in enumerate(batches if warm_up else batches[1:]):
      inputs, _ = rel.data.prepare_batch_inputs(b[1], opt.device, non_blocking=False)
      t = time.perf_counter()
      out = model(None, **inputs)
      float(out['pred_spans'].sum())
      times.append(time.perf_counter() - t)
  log(f'  infer {steps:3d} steps: calls {", ".join(f"{s:.3f}" for s in times)} s'
      + (' (first: warm-up)' if warm_up else ''))
  return times[1:] if warm_up else times


def summary(args, torch, path, lengths, train_s, infer_s, train_b, infer_b, pool_padded):
  """The JSON figures: rates from the mean seconds per timed call, padded lengths."""
  padded = lambda bs: [int(b[1]['video_feat'][0].shape[1]) for b in bs]
  step_s = float(np.mean(train_s))
  return {
      'device': f'cpu ({torch.get_num_threads()} torch threads)',
      'device_count': 1,
      'framework': 'authors\' PyTorch release',
      'torch_version': torch.__version__,
      'threads': torch.get_num_threads(),
      'release_dir': os.path.basename(os.path.normpath(path)),
      'train_examples_per_s': args.train_batch / step_s,
      'train_step_s': step_s,
      'train_step_s_each': train_s,
      'infer_queries_per_s': {k: args.infer_batch / float(np.mean(v))
                              for k, v in infer_s.items()},
      'infer_call_s_each': infer_s,
      'train_batch': args.train_batch, 'infer_batch': args.infer_batch,
      # Warm-up batch first; the timed ones after it.
      'train_padded_clips_each': padded(train_b), 'infer_padded_clips_each': padded(infer_b),
      'train_mean_padded_clips': float(np.mean(padded(train_b)[1:])),
      'infer_mean_padded_clips': float(np.mean(padded(infer_b)[1:])),
      # What an epoch's batches average: 2,000 random training batches, every test batch.
      'train_pool_mean_padded_clips': pool_padded[0],
      'infer_pool_mean_padded_clips': pool_padded[1],
      'lengths_source': lengths['source'],
      'measures': {'train': 'train.train_epoch on one collated batch (forward, criterion, '
                            'backward, clip, AdamW)',
                   'infer': 'model(None, **inputs) in eval mode, no_grad (full DDIM loop)'},
  }


FLAGS = flags.FlagValues()
flags.DEFINE_string('output', '', 'Also write the figures as JSON here.', flag_values=FLAGS)
flags.DEFINE_integer('threads', 2, 'torch.set_num_threads.', flag_values=FLAGS)
flags.DEFINE_integer('train_batch', 32, 'Training batch (the release\'s bsz).',
                     flag_values=FLAGS)
flags.DEFINE_integer('infer_batch', 64, 'Inference batch (the release\'s eval_bsz).',
                     flag_values=FLAGS)
flags.DEFINE_string('steps', '10,50', 'DDIM step counts to time.', flag_values=FLAGS)
flags.DEFINE_integer('train_iters', 8, 'Timed training batches.', flag_values=FLAGS)
flags.DEFINE_integer('infer_iters', 3, 'Timed inference calls per step count.',
                     flag_values=FLAGS)
flags.DEFINE_integer('seed', 0, 'Seed of the batches\' rows and feature values.',
                     flag_values=FLAGS)
flags.DEFINE_boolean('tiny', False, 'Smoke run: batches of 4, one timed call each, 2 DDIM '
                     'steps.', flag_values=FLAGS)
flags.DEFINE_string('annotations', None,
                    'Dir of Charades-STA annotation files: lengths, and the test file\'s row '
                    'order for the inference batches (default: the shipped lengths table, '
                    'test rows in a random order).', flag_values=FLAGS)


def settings() -> types.SimpleNamespace:
  args = app.namespace(FLAGS)
  if args.tiny:
    args.train_batch = args.infer_batch = 4
    args.train_iters = args.infer_iters = 1
    args.steps = '2'
  args.steps = [int(s) for s in args.steps.split(',')]
  return args


def lengths_in_order(annotation_dir, rng) -> dict:
  """speed_inputs' lengths uncapped but for the release's max_q_l 32 (max_v_l -1 keeps
  every clip but the last), the test rows in the test file's order (the release's eval
  DataLoader does not shuffle) when `annotation_dir` is given, else in a random order."""
  lengths = speed_inputs.load_lengths(annotation_dir, 10 ** 6, 32)
  if annotation_dir:
    _, rows = speed_inputs.read_rows(annotation_dir, 'test')
    lengths['test_clips'] = np.array([int(np.ceil(float(r['duration']))) for r in rows])
    lengths['test_query_len'] = np.minimum(
        np.array([len(r['query'].split()) for r in rows]) + 2, 32)
  else:
    order = rng.permutation(len(lengths['test_clips']))
    lengths['test_clips'] = lengths['test_clips'][order]
    lengths['test_query_len'] = rng.permutation(lengths['test_query_len'])
  return lengths


def measure(rel, torch, args, lengths, rng, log) -> dict:
  """Builds their model and batches in a temporary folder and times them."""
  (tr_clips, tr_q), (te_clips, te_q), pool_padded = pick_rows(rng, lengths, args)
  with tempfile.TemporaryDirectory(prefix='release_speed_') as workdir:
    opt = release_opt(rel, torch, workdir)
    rel.train.set_seed(opt.seed, use_cuda=False)
    model, criterion, optimizer, _ = rel.inference.setup_model(opt)
    train_b = release_batches(rel, opt, workdir, rng, tr_clips, tr_q, 'train', args.train_batch)
    infer_b = release_batches(rel, opt, workdir, rng, te_clips, te_q, 'test', args.infer_batch)
    roof = matmul_gflops(torch)
    log(f'torch {torch.__version__}, {torch.get_num_threads()} threads; lengths from '
        f'{lengths["source"]}; 2048^2 fp32 matmul {roof:.0f} GFLOP/s')
    train_s = time_train(rel, torch, opt, model, criterion, optimizer, train_b, log)
    infer_s = {str(s): time_infer(rel, torch, opt, model, infer_b, s, log, i == 0)
               for i, s in enumerate(args.steps)}
    roof_after = matmul_gflops(torch)
  return dict(train_s=train_s, infer_s=infer_s, train_b=train_b, infer_b=infer_b,
              pool_padded=pool_padded, roofs=[roof, roof_after])


def _main():
  args = settings()
  log = lambda s: print(s, flush=True)
  path, why_not = release_dir()
  if path is None:
    return app.error(why_not)
  load_before = os.getloadavg()[0]
  torch, rel = import_release(path)
  torch.set_num_threads(args.threads)
  rng = np.random.default_rng(args.seed)
  lengths = lengths_in_order(args.annotations, rng)
  log(f'release {path}')
  m = measure(rel, torch, args, lengths, rng, log)
  out = summary(args, torch, path, lengths, m['train_s'], m['infer_s'], m['train_b'],
                m['infer_b'], m['pool_padded'])
  out.update(matmul_2048_gflops_torch=m['roofs'],   # before and after the timings
             load_average_1min=[load_before, os.getloadavg()[0]])   # at start and end
  log(f'release: train {out["train_examples_per_s"]:.1f} ex/s (step {out["train_step_s"]:.3f} '
      f's, mean padded {out["train_mean_padded_clips"]:.1f} clips); infer ' +
      ', '.join(f'{k} steps {v:.1f} q/s' for k, v in out['infer_queries_per_s'].items()))
  report.write_result(args.output, out, log)
  return 0


def main(argv=None) -> int:
  return app.run(FLAGS, _main, argv, __doc__)


if __name__ == '__main__':
  sys.exit(main())
