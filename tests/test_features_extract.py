"""End to end on generated videos with tiny random backbones (no network).

extract_features.py (CLIP + SlowFast) -> build_dataset.py -> train a few steps ->
predict.py --video (JSON and PNG); resumable and atomic extraction, bad videos listed, features equal to the
backbones applied to the sampled clips one video at a time, query features equal to
the text tower's rows up to the end token; a workdir/backbone mismatch is refused.
"""
import fractions
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
import transformers

from momentdiff_jax.features import backbones as bb  # pylint: disable=g-import-not-at-top
from momentdiff_jax.features import video  # pylint: disable=g-import-not-at-top
from tests import backbone_fixtures  # pylint: disable=g-import-not-at-top
from tests.test_features_video import write_video  # pylint: disable=g-import-not-at-top

from momentdiff_jax.cli import build as build_dataset  # data_prep/build_dataset.py's main
from momentdiff_jax.cli import extract as extract_features  # data_prep/extract_features.py's

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CLIP_LEN = 2.0
QUERIES = ['a person opens the door', 'someone sits on a chair', 'he walks to the window',
           'a woman drinks from a cup', 'the man turns on the light', 'she reads a book']
# (frames, fps): 7.9 s to 13.1 s, odd rates
VIDEOS = [(79, fractions.Fraction(10)), (100, fractions.Fraction(15, 2)),
          (131, fractions.Fraction(10)), (110, fractions.Fraction(25, 2)),
          (90, fractions.Fraction(10)), (97, fractions.Fraction(15, 2))]
TINY = dict(hidden_dim=32, num_heads=4, ffn_dim=64)
# The tiny SlowFast sees 8 frames of 32x32 per clip (32 of 224x224 by default).
SF_FRAMES, SF_CROP = 8, 32


def make_clip_dir(path, seed):
  return backbone_fixtures.write_small_clip(path, QUERIES, seed)


@pytest.fixture(scope='module')
def world(tmp_path_factory):
  """Videos, annotations, a tiny CLIP dir and the extracted features."""
  root = tmp_path_factory.mktemp('e2e')
  vdir = root / 'videos'
  vdir.mkdir()
  rows = []
  for k, (n, fps) in enumerate(VIDEOS):
    path = write_video(vdir / f'vid{k}.mp4', fps, n)
    dur = round(video.probe(path).duration, 3)
    for j in range(2):
      s = 2.0 * j + (k % 3)
      rows.append({'qid': 10 * k + j, 'vid': f'vid{k}', 'duration': dur,
                   'query': QUERIES[(k + j) % len(QUERIES)],
                   'relevant_windows': [[s, min(s + 3.0, dur)]]})
  (vdir / 'broken.mp4').write_bytes(b'\x00junk' * 64)
  files = {}
  for split, keep in (('train', range(0, 4)), ('test', range(4, 6))):
    files[split] = str(root / f'{split}.jsonl')
    with open(files[split], 'w') as f:
      f.writelines(json.dumps(r) + '\n' for r in rows if int(r['vid'][3:]) in keep)
  queries = str(root / 'queries.jsonl')
  with open(queries, 'w') as f:
    f.writelines(json.dumps(r) + '\n' for r in rows)
  clip_dir = make_clip_dir(str(root / 'clip'), seed=0)
  sf_path = str(root / 'slowfast.pyth')
  # R18 depths (one block per stage): the same code paths, half the compile time of R50.
  backbone_fixtures.write_tiny_slowfast(sf_path, model_depth=18)
  feats = str(root / 'feats')
  args = [f'--videos={vdir}', f'--output={feats}', f'--clip_len={CLIP_LEN}',
          '--backbones=clip,slowfast', f'--clip_weights={clip_dir}',
          f'--slowfast_weights={sf_path}', f'--slowfast_frames={SF_FRAMES}',
          f'--slowfast_crop={SF_CROP}', f'--queries={queries}', '--batch_size=16',
          '--no_progress']
  assert extract_features.main(args) == 3   # broken.mp4: the others are written
  return dict(root=root, vdir=str(vdir), rows=rows, files=files, clip=clip_dir,
              slowfast=sf_path, feats=feats, args=args)


def test_features_are_the_backbone_on_the_sampled_clips(world):
  """Files == one encoder pass over every video's sampled clips (batches spanned videos)."""
  from momentdiff_jax.features import extract
  from momentdiff_jax.features.clip import load_clip
  from momentdiff_jax.features.slowfast import load_slowfast
  m = load_clip(world['clip'])
  sf = load_slowfast(world['slowfast'], num_frames=SF_FRAMES, crop_size=SF_CROP)
  enc = bb.Encoders(['slowfast', 'clip'], batch_size=16, models={'clip': m, 'slowfast': sf})
  got = {'clip': [], 'slowfast': []}
  pixels = {'clip': [], 'slowfast': []}
  for k in range(len(VIDEOS)):
    path = os.path.join(world['vdir'], f'vid{k}.mp4')
    info = video.probe(path)
    samplers = [video.ClipSampler(CLIP_LEN, m.image_size),
                video.SlowFastSampler(CLIP_LEN, SF_CROP, int(np.floor(info.avg_fps)),
                                      info.duration, num_frames=SF_FRAMES)]
    for i, arr in video.sample_clips(path, samplers):
      pixels[['clip', 'slowfast'][i]].append(arr)
    for n in got:
      with np.load(os.path.join(world['feats'], f'{n}_features', f'vid{k}.npz')) as z:
        got[n].append(z['features'])
    t_last = (VIDEOS[k][0] - 1) / VIDEOS[k][1]
    assert len(got['clip'][k]) == int(np.floor(t_last / CLIP_LEN + 0.5))
    assert len(got['slowfast'][k]) == int(np.ceil(info.duration / CLIP_LEN))  # partial kept
    assert got['clip'][k].shape[1] == 12 and got['clip'][k].dtype == np.float32
  for n in got:
    want = enc.encode(n, np.concatenate(pixels[n]))
    np.testing.assert_allclose(np.concatenate(got[n]), want, atol=1e-4, rtol=1e-4)
  # What predict_video extracts in memory is what the files hold.
  mem = extract.video_features(os.path.join(world['vdir'], 'vid2.mp4'), enc, CLIP_LEN)
  for n in got:
    np.testing.assert_allclose(mem[n], got[n][2], atol=1e-4, rtol=1e-4)

  ids, mask = m.tokenize([r['query'] for r in world['rows']])
  hidden = np.asarray(m.encode_text(ids, mask))
  for r, h, mk in zip(world['rows'], hidden, mask):
    with np.load(os.path.join(world['feats'], 'clip_text_features',
                              f'qid{r["qid"]}.npz')) as z:
      np.testing.assert_allclose(z['last_hidden_state'], h[mk.astype(bool)],
                                 atol=1e-5, rtol=1e-5)
  with open(os.path.join(world['feats'], 'clip_features', 'extraction.json')) as f:
    rec = json.load(f)
  assert rec['backbone'] == 'clip' and rec['clip_len'] == CLIP_LEN
  assert rec['feature_dim'] == 12 and rec['fingerprint']


def _mtimes(root):
  return {os.path.join(d, f): os.stat(os.path.join(d, f)).st_mtime_ns
          for d, _, fs in os.walk(root) for f in fs}


def test_rerun_skips_written_videos_and_lists_bad_ones(world, capsys):
  before = _mtimes(world['feats'])
  assert not [f for f in before if '.tmp' in f]          # atomic writes
  for d in ('clip_features', 'slowfast_features'):
    names = os.listdir(os.path.join(world['feats'], d))
    assert sorted(names) == sorted([f'vid{k}.npz' for k in range(len(VIDEOS))]
                                   + ['extraction.json'])
  assert extract_features.main(world['args']) == 3   # broken.mp4 still fails
  log = capsys.readouterr().out
  assert f'{len(VIDEOS)} of {len(VIDEOS) + 1} videos already have' in log
  assert 'broken.mp4' in log and '1 videos failed' in log
  assert _mtimes(world['feats']) == before
  # A dir of another extraction is refused, naming what differs.
  other = make_clip_dir(str(world['root'] / 'clip_other'), seed=1)
  args = [a if not a.startswith('--clip_weights') else f'--clip_weights={other}'
          for a in world['args']]
  assert extract_features.main(args) == 1
  assert 'fingerprint' in capsys.readouterr().err
  # So is a rerun with other SlowFast frames or crop, naming both values of each.
  args = [a for a in world['args'] if not a.startswith(('--slowfast_frames', '--slowfast_crop'))]
  assert extract_features.main(args + ['--slowfast_frames=4', '--slowfast_crop=64']) == 1
  err = capsys.readouterr().err
  assert 'slowfast_features holds features of another extraction' in err
  assert f'frames_per_clip {SF_FRAMES} there vs 4 now (--slowfast_frames)' in err
  assert f'crop {SF_CROP} there vs 64 now (--slowfast_crop)' in err
  assert _mtimes(world['feats']) == before


def test_video_features_need_no_tokenizer_files(world, tmp_path, capsys):
  """A CLIP directory as `CLIPModel.save_pretrained` writes it (config and weights,
  no tokenizer files) extracts video features; only --queries asks for a tokenizer."""
  clip = str(tmp_path / 'clip_model_only')
  torch.manual_seed(0)   # the weights of make_clip_dir(seed=0)
  transformers.CLIPModel(transformers.CLIPConfig.from_pretrained(world['clip'])).eval(
      ).save_pretrained(clip)
  assert sorted(os.listdir(clip)) == ['config.json', 'model.safetensors']
  out = str(tmp_path / 'feats')
  args = [f'--videos={world["vdir"]}/vid[0-2].mp4', f'--output={out}',
          f'--clip_len={CLIP_LEN}', '--backbones=clip', f'--clip_weights={clip}',
          '--batch_size=16', '--no_progress']
  assert extract_features.main(args) == 0
  for k in range(3):
    with np.load(os.path.join(out, 'clip_features', f'vid{k}.npz')) as a, \
         np.load(os.path.join(world['feats'], 'clip_features', f'vid{k}.npz')) as b:
      np.testing.assert_array_equal(a['features'], b['features'])
  out2 = str(tmp_path / 'feats2')
  args = [a.replace(out, out2) for a in args] + [f'--queries={world["root"]}/queries.jsonl']
  assert extract_features.main(args) == 1
  assert 'no CLIP tokenizer files' in capsys.readouterr().err
  assert not os.path.exists(os.path.join(out2, 'clip_features'))  # refused before any video


def test_two_devices_give_the_same_files(world, tmp_path):
  """The CLI on 2 (virtual CPU) devices: batches split over them, same features."""
  out = str(tmp_path / 'feats2')
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_force_host_platform_device_count=2')
  res = subprocess.run([sys.executable, os.path.join(ROOT, 'data_prep', 'extract_features.py'),
                        f'--videos={world["vdir"]}/vid[0-3].mp4', f'--output={out}',
                        f'--clip_len={CLIP_LEN}', '--backbones=clip',
                        f'--clip_weights={world["clip"]}', '--batch_size=5', '--no_progress'],
                       env=env, capture_output=True, text=True, cwd=ROOT)
  assert res.returncode == 0, res.stderr[-2000:]
  assert 'clip (batch 6) on 2 local devices' in res.stdout   # 5 rounded up to 2 x 3
  names = sorted(f for f in os.listdir(os.path.join(out, 'clip_features')) if f.endswith('.npz'))
  assert names == [f'vid{k}.npz' for k in range(4)]
  for name in names:
    with np.load(os.path.join(out, 'clip_features', name)) as a, \
         np.load(os.path.join(world['feats'], 'clip_features', name)) as b:
      np.testing.assert_allclose(a['features'], b['features'], atol=1e-5, rtol=1e-5)


def test_build_train_predict_video(world, tmp_path):
  from momentdiff_jax import Predictor
  from momentdiff_jax import train
  from configs import qvhighlights
  data = str(tmp_path / 'data')
  assert build_dataset.main([
      f'--train={world["files"]["train"]}', f'--test={world["files"]["test"]}',
      f'--video_features={world["feats"]}/slowfast_features,{world["feats"]}/clip_features',
      f'--text_features={world["feats"]}/clip_text_features', f'--clip_len={CLIP_LEN}',
      f'--output={data}', '--no_progress']) == 0
  with open(os.path.join(data, 'metadata.json')) as f:
    meta = json.load(f)
  assert [r['backbone'] for r in meta['backbones']['video']] == ['slowfast', 'clip']
  assert meta['backbones']['video'][0]['frames_per_clip'] == SF_FRAMES
  assert meta['backbones']['text']['backbone'] == 'clip'

  c = qvhighlights.get_config()
  c.data.dir = data
  for k, v in TINY.items():
    c.model[k] = v
  c.data.max_v_l, c.data.length_buckets = 8, (8,)
  c.batch_size, c.eval_batch_size, c.num_train_steps = 4, 8, 2
  c.eval_every_steps = c.checkpoint_every_steps = 2
  c.diffusion.sampling_steps = 2
  # One layer per stack, 2 spans: a smaller program to compile (CPU compile time is
  # most of this test).
  c.model.t2v_layers = c.model.enc_layers = c.model.dec_layers = c.model.n_input_proj = 1
  c.diffusion.num_spans = c.data.max_windows = 2
  wd = str(tmp_path / 'wd')
  train.train_and_evaluate(c, wd)

  out_json, out_png = str(tmp_path / 'p.json'), str(tmp_path / 'p.png')
  vid = os.path.join(world['vdir'], 'vid4.mp4')
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  res = subprocess.run([sys.executable, os.path.join(ROOT, 'predict.py'), f'--workdir={wd}',
                        f'--video={vid}', '--query=someone sits on a chair',
                        f'--clip_weights={world["clip"]}',
                        f'--slowfast_weights={world["slowfast"]}', '--top_k=1',
                        f'--output={out_json}', f'--plot={out_png}'],
                       env=env, capture_output=True, text=True, cwd=ROOT)
  assert res.returncode == 0, res.stderr[-2000:]
  with open(out_json) as f:
    pred = json.load(f)
  assert json.loads(res.stdout.strip().splitlines()[-1]) == pred
  assert set(pred) == {'video', 'query', 'duration', 'pred_relevant_windows',
                       'pred_saliency_scores'}
  assert pred['duration'] == pytest.approx(VIDEOS[4][0] / float(VIDEOS[4][1]), abs=1e-3)
  wins = np.asarray(pred['pred_relevant_windows'])
  assert wins.shape == (1, 3) and 0 <= wins[0, 2] <= 1
  assert (wins[:, 0] >= 0).all() and (wins[:, 1] <= pred['duration'] + 1e-6).all()
  n_clips = int(np.floor((VIDEOS[4][0] - 1) / float(VIDEOS[4][1]) / CLIP_LEN + 0.5))
  assert len(pred['pred_saliency_scores']) == n_clips
  from matplotlib import image
  img = image.imread(out_png)
  assert img.shape[0] >= 300 and img.shape[1] >= 600

  assert 'no weights fingerprint' not in res.stderr   # this dataset recorded them

  # A dataset built from the public releases records no fingerprint: predict_video
  # says so, once, and goes on with the given weights.
  import jax
  from momentdiff_jax.run import workdir as workdir_lib
  restored = workdir_lib.restore(wd, 'best')
  config, params = restored.config, jax.tree.map(lambda x: x[0], restored.params)
  config.data.backbones = {'video': [{'backbone': n, 'inferred_from': 'directory name'}
                                     for n in ('slowfast', 'clip')],
                           'text': {'backbone': 'clip', 'inferred_from': 'directory name'}}
  p = Predictor(config, params, clip_weights=world['clip'], slowfast_weights=world['slowfast'])
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    for q in ('someone sits on a chair', 'a person opens the door'):
      p.predict_video(vid, q)
  said = [str(w.message) for w in caught if 'no weights fingerprint' in str(w.message)]
  assert len(said) == 1, said
  assert 'slowfast video, clip video, CLIP text features' in said[0]
  assert 'clip, slowfast.pyth' in said[0] and 'SLOWFAST_8x8_R50.pkl' in said[0]

  # Mismatches are refused by name, before any video is read.
  other = make_clip_dir(str(tmp_path / 'clip_other'), seed=1)
  with pytest.raises(ValueError, match=r'clip: the dataset was extracted with weights clip '
                     r'\(clip, fingerprint \w+\), given clip \(clip_other'):
    Predictor.from_workdir(wd, clip_weights=other, slowfast_weights=world['slowfast']
                           ).predict_video(vid, 'a query')
  with pytest.raises(ValueError, match=r'trained on \[slowfast, clip\].*give slowfast_weights'):
    Predictor.from_workdir(wd, clip_weights=world['clip']).predict_video(vid, 'a query')


def test_record_mismatch_names_both_sides():
  from momentdiff_jax.common import records
  sf_c = [{'backbone': 'slowfast', 'fingerprint': 'aa'}, {'backbone': 'clip',
                                                           'fingerprint': 'bb'}]
  assert records.mismatches(sf_c, [dict(r) for r in sf_c]) == []
  msg = records.mismatches(sf_c, [{'backbone': 'clip', 'fingerprint': 'bb'}])[0]
  assert '[slowfast, clip]' in msg and 'given [clip]' in msg
  msg = records.mismatches(sf_c, [{'backbone': 'slowfast', 'fingerprint': 'cc',
                                   'weights': 'x.pkl'}, sf_c[1]])[0]
  assert 'slowfast' in msg and 'x.pkl' in msg and 'cc' in msg
  # The public releases' dirs are named by their backbone.
  assert records.read_record('/nonexistent/slowfast_features')['backbone'] == 'slowfast'
  assert records.read_record('/nonexistent/vgg')['backbone'] is None
  with pytest.raises(ValueError, match='subset of clip,slowfast'):
    bb.parse_names('clip,i3d')
