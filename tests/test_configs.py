"""Every config of CONTRACT.md loads and carries the promised keys."""
import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = ['synthetic', 'charades', 'charades_vgg', 'charades_c3d', 'charades_len',
         'charades_mom', 'charades_cd', 'qvhighlights', 'tacos', 'qvhighlights_clip',
         'charades_clip']
KEYS = ['data.dir', 'seed', 'batch_size', 'num_epochs', 'num_train_steps', 'learning_rate',
        'checkpoint_every_steps', 'diffusion.num_spans', 'diffusion.sampling_steps',
        'diffusion.scale']


def load(name):
  spec = importlib.util.spec_from_file_location(f'cfg_{name}',
                                                os.path.join(ROOT, 'configs', f'{name}.py'))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config()


@pytest.mark.parametrize('name', NAMES)
def test_config_keys(name):
  c = load(name)
  for key in KEYS:
    node = c
    for part in key.split('.'):
      node = node[part]
  assert c.model.hidden_dim % c.model.num_heads == 0
  assert max(c.data.length_buckets) >= c.data.max_v_l
  assert c.data.max_windows <= c.diffusion.num_spans
  assert c.checkpoint_every_steps > 0


def test_release_values():
  c = load('charades')
  assert (c.learning_rate, c.weight_decay, c.lr_drop_epochs, c.grad_clip_norm) == (
      2e-4, 1e-4, 40, 0.1)
  assert (c.batch_size, c.num_epochs, c.diffusion.num_spans, c.loss.sim) == (32, 100, 5, 4.0)
  assert c.diffusion.sampling_steps == 10 and c.diffusion.scale == 2.0
  assert load('charades_len').loss.sim == 2.0 and load('charades_mom').loss.sim == 2.0
  assert load('qvhighlights').diffusion.num_spans == 10


def test_release_scripts_and_defaults():
  """Values the release's scripts / argparse defaults set (momentdiff/scripts, config.py)."""
  cd = load('charades_cd')   # --enc_layers 3 builds the T2V stack and the encoder with 3
  assert (cd.model.t2v_layers, cd.model.enc_layers, cd.model.dec_layers) == (3, 3, 3)
  qv = load('qvhighlights')
  assert (qv.num_epochs, qv.data.max_windows, qv.learning_rate, qv.loss.sim) == (100, 5, 1e-4, 1.0)
  # The release validates once per epoch; the synthetic config validates more often.
  for name in NAMES[1:]:
    assert load(name).eval_every_steps <= 0, name


def test_clip_only_configs_keep_their_datasets_hyper_parameters():
  """CLIP-only differs from SlowFast+CLIP only in the data (dims are read from it)."""
  for name, base in (('qvhighlights_clip', 'qvhighlights'), ('charades_clip', 'charades')):
    assert load(name).to_dict() == load(base).to_dict()


def test_configs_load_by_path_alone():
  """A config built on another one loads it by path (config_base.load_config), not by
  `from configs import ...`: console scripts do not have the repository's root on
  sys.path."""
  from momentdiff_jax.common import config_base
  for name in sorted(os.listdir(os.path.join(ROOT, 'configs'))):
    if name.endswith('.py'):
      with open(os.path.join(ROOT, 'configs', name)) as f:
        text = f.read()
      assert 'from configs' not in text and 'import configs' not in text, name
  for name in NAMES:
    assert config_base.load_config(os.path.join(ROOT, 'configs', f'{name}.py')) == load(name)
  assert config_base.load_config('charades_len.py', beside=os.path.join(
      ROOT, 'configs', 'x.py')).loss.sim == 2.0
  with pytest.raises(FileNotFoundError, match='nope.py'):
    config_base.load_config(os.path.join(ROOT, 'configs', 'nope.py'))
