"""A run's workdir as the library sees it: the model a config builds, its parameters, and
restoring both from `config.json` plus a checkpoint.

Sits below `train`, `evaluation` and `predictor` (they all import it; it imports only
the model, checkpointing and video_sources), so the import graph flows one way: entry points ->
train / evaluation / predictor -> workdir -> checkpointing, model.
"""
import jax
import jax.numpy as jnp

from momentdiff_jax import checkpointing
from momentdiff_jax import video_sources
from momentdiff_jax.model import MomentDiff, abstract_params


def create_model(config, video_dim: int, text_dim: int) -> MomentDiff:
  return MomentDiff(config.model, video_dim=video_dim, text_dim=text_dim)


def init_params(model: MomentDiff, config, rng, video_dim: int, text_dim: int):
  """Fresh variables `{'params': ...}`, traced at the smallest bucket's shapes."""
  lv = config.data.length_buckets[0]
  lt = config.data.max_q_l
  n = config.diffusion.num_spans
  return model.init(
      rng, jnp.zeros((1, lv, video_dim)), jnp.ones((1, lv)), jnp.zeros((1, lt, text_dim)),
      jnp.ones((1, lt)), jnp.full((1, n, 2), 0.5), jnp.zeros((1,), jnp.int32))


def eval_rng(seed: int) -> jax.Array:
  """The sampling RNG of every evaluation of a run (periodic, final, evaluate.py)."""
  return jax.random.fold_in(jax.random.PRNGKey(seed), 2)


def placed(tree, sharding):
  """Pytree of arrays or ShapeDtypeStructs -> ShapeDtypeStructs placed on `sharding`."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                      tree)


def restore_model(workdir: str, checkpoint: str = 'best', sharding=None):
  """A workdir's (config, model, params, step, which checkpoint was used).

  Params are restored onto `sharding` when given (e.g. replicated over a mesh), else
  as orbax places them by default.
  """
  config = checkpointing.load_config(workdir)
  model = create_model(config, config.video_dim, config.text_dim)
  abstract = {'params': abstract_params(config.model, config.video_dim, config.text_dim)}
  if sharding is not None:
    abstract = placed(abstract, sharding)
  step, params, used = checkpointing.restore_params(workdir, checkpoint, abstract)
  return config, model, params, step, used


def init_from(source_workdir: str, config, info: dict, params, sharding=None, log=print):
  """Params of `source_workdir`'s best checkpoint to start a new run from (fine-tuning).

  `params` are the new run's freshly initialized params (their shapes must match the
  source's: same model config and input dims). The source's video feature sources are
  matched to the new dataset's (`video_sources.align_to_dataset`): the same sources in
  another order permute the first video projection's input rows; others stop the run.
  """
  src_config, _, src, step, used = restore_model(source_workdir, 'best', sharding)
  want = jax.tree_util.tree_leaves_with_path(params)
  got = dict((jax.tree_util.keystr(p), x.shape) for p, x in
             jax.tree_util.tree_leaves_with_path(src))
  bad = [f'{jax.tree_util.keystr(p)}: source {got.get(jax.tree_util.keystr(p))}, run {x.shape}'
         for p, x in want if got.get(jax.tree_util.keystr(p)) != x.shape]
  if bad or len(got) != len(want):
    raise ValueError(f'init_from={source_workdir}: its parameters do not fit this run\'s '
                     f'model ({len(bad)} differ: ' + '; '.join(bad[:5]) + '). Use the '
                     'same model config and feature dims as the source workdir.')
  src = video_sources.align_to_dataset(src_config, src, info, log=log)
  log(f'Initialized from {source_workdir} ({used} checkpoint, step {step}).')
  return src
