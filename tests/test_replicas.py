"""Replicas in one program: the grid, the vmapped step == separate runs, swept values."""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from momentdiff_jax.common import config_base
from momentdiff_jax.ops import diffusion
from momentdiff_jax.run import replicas
from momentdiff_jax.run import train_step as ts
from momentdiff_jax.run import workdir as workdir_lib
from tests.test_train_step import DT, DV, fixed_batch, small_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 3


def sweep_config():
  c = small_config()
  # One layer per stack: compile time, not coverage, is what layers cost here.
  c.model.t2v_layers = c.model.enc_layers = 1
  c.seed = 5
  c.num_seeds = 2
  c.sweep.learning_rate = '1e-3,4e-3'
  c.sweep.loss.giou = '1,3'
  return c


def test_grid_order_seeds_and_replica_config():
  c = sweep_config()
  reps = replicas.replicas(c)
  assert [r.describe() for r in reps[:3]] == [
      {'replica': 0, 'seed': 5, 'learning_rate': 1e-3, 'loss.giou': 1.0},
      {'replica': 1, 'seed': 6, 'learning_rate': 1e-3, 'loss.giou': 1.0},
      {'replica': 2, 'seed': 5, 'learning_rate': 1e-3, 'loss.giou': 3.0}]
  assert [(r.seed, r.values['learning_rate'], r.values['loss.giou']) for r in reps[3:]] == [
      (6, 1e-3, 3.0), (5, 4e-3, 1.0), (6, 4e-3, 1.0), (5, 4e-3, 3.0), (6, 4e-3, 3.0)]
  hp = replicas.hparams(c)
  np.testing.assert_array_equal(hp['loss.giou'], [1, 1, 3, 3, 1, 1, 3, 3])
  one = replicas.replica_config(c, 6)
  assert (one.seed, one.data.seed, one.num_seeds) == (5, 5, 1)
  assert (one.learning_rate, one.loss.giou) == (4e-3, 3.0)
  assert replicas.num_replicas(one) == 1
  # Without num_seeds / sweep: one replica, the run itself.
  plain = small_config()
  assert replicas.hparams(plain) == {} and replicas.num_replicas(plain) == 1
  assert config_base.data_seed(plain) == plain.seed


@pytest.mark.parametrize('key,value,match', [
    ('learning_rate', '1e-3,abc', 'expected numbers'),
    ('diffusion.scale', '2,0', 'must be > 0'),
    ('loss.sim', '1,1', 'repeats'),
])
def test_bad_sweep_values_are_named(key, value, match):
  c = small_config()
  node = c.sweep
  *parents, leaf = key.split('.')
  for p in parents:
    node = node[p]
  node[leaf] = value
  with pytest.raises(ValueError, match=match) as e:
    replicas.replicas(c)
  assert key in str(e.value)


@pytest.fixture(scope='module')
def replica_run():
  """STEPS vmapped steps of the sweep config on a fixed batch: params and losses."""
  config = sweep_config()
  model = workdir_lib.create_model(config, DV, DT)
  schedule = diffusion.make_schedule(config.diffusion)
  init = replicas.replica_keys(config, 0)
  params = jax.jit(jax.vmap(lambda r: workdir_lib.init_params(model, config, r, DV, DT)))(init)
  tx = ts.make_optimizer(config, steps_per_epoch=100)
  r = replicas.num_replicas(config)
  state = ts.TrainState(step=jnp.zeros((r,), jnp.int32), params=params,
                        opt_state=jax.jit(jax.vmap(tx.init))(params))
  step = jax.jit(ts.make_train_step(model, config, schedule, 100))
  batch = {k: jnp.asarray(v) for k, v in fixed_batch(4).items()}
  rngs = replicas.replica_keys(config, 1)
  hp = replicas.hparams(config)
  history = [params]
  losses = []
  for _ in range(STEPS):
    state, parts = step(state, batch, rngs, hp)
    history.append(state.params)
    losses.append(parts)
  return config, model, schedule, batch, jax.device_get(history), jax.device_get(losses)


def test_replica_equals_separate_run(replica_run):
  """Replica r == a single run with its seed and swept values (first steps, 1e-5)."""
  config, model, schedule, batch, history, losses = replica_run
  index = 5   # seed + 1, the second learning rate
  cfg = replicas.replica_config(config, index)
  params = jax.jit(lambda r: workdir_lib.init_params(model, cfg, r, DV, DT))(
      jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 0))
  tx = ts.make_optimizer(cfg, steps_per_epoch=100)
  state = ts.TrainState(step=jnp.asarray(0), params=params, opt_state=tx.init(params))
  # One replica alone: the body the replica step vmaps, no swept values.
  step = jax.jit(lambda s, b, r: ts.replica_step(model, cfg, schedule, 100, s, b, r, {}))
  rng = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 1)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a[index], b), history[0], params)
  for s in range(STEPS):
    state, parts = step(state, batch, rng)
    for k, v in jax.device_get(parts).items():
      np.testing.assert_allclose(losses[s][k][index], v, rtol=1e-5, atol=1e-5, err_msg=k)


def test_swept_values_reach_their_replicas(replica_run):
  """Closed forms per replica after the first step, on replicas sharing a seed:
  the total loss moves by (3 - 1) x the GIoU terms where loss.giou is 3, and AdamW's
  first update (-lr x (g / (|g| + eps) + wd x p), the same g) scales with lr."""
  config, _, _, _, history, losses = replica_run
  reps = replicas.replicas(config)
  first = losses[0]
  giou_terms = first['vmr/loss_giou'] + sum(
      first[k] for k in first if k.startswith('vmr/loss_giou_'))
  for a in reps:
    for b in reps:
      if a.seed != b.seed or a.values['learning_rate'] != b.values['learning_rate']:
        continue
      dw = b.values['loss.giou'] - a.values['loss.giou']
      np.testing.assert_allclose(first['total'][b.index] - first['total'][a.index],
                                 dw * giou_terms[a.index], rtol=1e-5, atol=1e-5)
  for a in reps:
    for b in reps:
      if a.seed == b.seed and a.values['loss.giou'] == b.values['loss.giou'] and \
          a.values['learning_rate'] < b.values['learning_rate']:
        da = jax.tree.leaves(jax.tree.map(lambda p1, p0: p1[a.index] - p0[a.index],
                                          history[1], history[0]))
        db = jax.tree.leaves(jax.tree.map(lambda p1, p0: p1[b.index] - p0[b.index],
                                          history[1], history[0]))
        ratio = b.values['learning_rate'] / a.values['learning_rate']
        for x, y in zip(da, db):
          np.testing.assert_allclose(y, ratio * x, rtol=1e-4, atol=1e-7)
  # Different seeds: different initial params (independent replicas).
  leaf = jax.tree.leaves(history[0])[0]
  assert not np.allclose(leaf[0], leaf[1])


def _run_sharded(out_path):
  """In a process with 4 CPU devices: the `replica_run` steps on a (replica 2, data 2)
  mesh (4 replicas per device group, each batch split over 2 devices); saves the
  losses to `out_path`."""
  from momentdiff_jax.run import mesh as mesh_lib
  assert jax.device_count() == 4
  assert [tuple(mesh_lib.make_mesh(r).devices.shape) for r in (1, 3, 4, 6, 8)] == [
      (1, 4), (1, 4), (4, 1), (2, 2), (4, 1)]
  config = sweep_config()
  model = workdir_lib.create_model(config, DV, DT)
  mesh = mesh_lib.make_mesh(2)
  rsh, dsh = mesh_lib.replica_sharding(mesh), mesh_lib.data_sharding(mesh)
  params = jax.jit(jax.vmap(lambda r: workdir_lib.init_params(model, config, r, DV, DT)),
                   out_shardings=rsh)(replicas.replica_keys(config, 0))
  tx = ts.make_optimizer(config, steps_per_epoch=100)
  r = replicas.num_replicas(config)
  state = ts.TrainState(step=jax.device_put(jnp.zeros((r,), jnp.int32), rsh), params=params,
                        opt_state=jax.jit(jax.vmap(tx.init), out_shardings=rsh)(params))
  step = jax.jit(ts.make_train_step(model, config,
                                    diffusion.make_schedule(config.diffusion), 100),
                 in_shardings=(rsh, dsh, rsh, rsh), out_shardings=(rsh, rsh))
  batch = jax.device_put({k: jnp.asarray(v) for k, v in fixed_batch(4).items()}, dsh)
  rngs = jax.device_put(replicas.replica_keys(config, 1), rsh)
  hp = jax.device_put(replicas.hparams(config), rsh)
  losses = []
  for _ in range(STEPS):
    state, parts = step(state, batch, rngs, hp)
    assert parts['total'].sharding.spec == rsh.spec
    losses.append(jax.device_get(parts))
  np.savez(out_path, **{f'{s}/{k}': v for s, p in enumerate(losses) for k, v in p.items()})


def test_sharded_over_4_devices_equals_one_device(replica_run, tmp_path):
  """Replicas split over 4 simulated devices (2 replica groups x 2-way data parallel)
  == the same steps on one device: the first step's losses to 1e-5; later steps to
  1e-3, Adam's first update (g / (|g| + eps)) amplifying reduction-order round-off."""
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4',
             JAX_PLATFORMS='cpu', PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
  out = tmp_path / 'sharded.npz'
  res = subprocess.run([sys.executable, '-c', 'import sys; from tests import test_replicas as t; '
                        't._run_sharded(sys.argv[1])', str(out)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=900)
  assert res.returncode == 0, res.stderr[-3000:]
  sharded = np.load(out)
  losses = replica_run[-1]
  for s in range(STEPS):
    for k, v in losses[s].items():
      tol = 1e-5 if s == 0 else 1e-3
      np.testing.assert_allclose(sharded[f'{s}/{k}'], v, rtol=tol, atol=tol,
                                 err_msg=f'step {s} {k}')


def test_data_order_follows_data_seed(tmp_path):
  """Replicas share batches: the data comes from data.seed (default seed), not seed."""
  from momentdiff_jax.data import TrainIterator, synthetic
  from tests import data_fixtures as fx
  data_dir = synthetic.write_synthetic(str(tmp_path / 'ds'), num_train=40, num_val=4,
                                       num_test=4)

  def batches(seed, data_seed):
    c = fx.data_config(max_v_l=64, buckets=(32, 64), max_q_l=16)
    c.batch_size, c.seed, c.data.seed = 8, seed, data_seed
    it = TrainIterator(c, data_dir, prefetch=0)
    return [next(it) for _ in range(3)]

  ref = batches(3, None)
  for other in (batches(7, 3), batches(3, 3)):
    for a, b in zip(ref, other):
      for k in a:
        np.testing.assert_array_equal(a[k], b[k])
  assert not np.array_equal(batches(7, None)[0]['query_feat'], ref[0]['query_feat'])
