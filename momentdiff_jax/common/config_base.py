"""Shared defaults for every config in `configs/` (the release's hyper-parameters).

Each `configs/NAME.py` calls `base_config()` and overrides what its dataset needs.
Feature dimensions (`video_dim`, `text_dim`) are read from the built dataset at run
time; they stay `None` here so nobody types them.
"""
import importlib.util
import os
from typing import Optional

import ml_collections
from ml_collections import config_dict

# Hyper-parameters `config.sweep` may vary across replicas: numbers that change no
# shape and no Python branch, so they can be traced per replica (`replicas.py`).
SWEEPABLE = (
    'learning_rate', 'weight_decay', 'grad_clip_norm',
    'loss.span_l1', 'loss.giou', 'loss.label', 'loss.eos_coef', 'loss.sim',
    'loss.sim_margin', 'loss.sim_temperature',
    'matcher.cost_span', 'matcher.cost_giou', 'matcher.cost_class',
    'diffusion.scale', 'diffusion.eta', 'diffusion.placeholder_std', 'diffusion.min_width',
)


def load_config(path: str, beside: Optional[str] = None) -> ml_collections.ConfigDict:
  """`get_config()` of the config file at `path` (relative to the folder of the file
  `beside` when given), loaded by path as `--config=PATH` loads it.

  Configs built on another one call `load_config('charades.py', beside=__file__)`
  instead of `from configs import charades`: that import needs the repository's root
  on sys.path, which a console script (`momentdiff-train`) does not have.
  """
  if beside is not None:
    path = os.path.join(os.path.dirname(os.path.abspath(beside)), path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'config file not found: {path}')
  name = 'momentdiff_config_' + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def get_key(config, key: str):
  """The value at a dotted key (`'loss.giou'`); KeyError when a part is missing."""
  node = config
  for part in key.split('.'):
    node = node[part]
  return node


def set_key(config, key: str, value) -> None:
  """Sets the leaf of a dotted key whose parents exist (TypeError from a type-safe
  ConfigDict when the value's type differs from the leaf's)."""
  *parents, leaf = key.split('.')
  node = config
  for part in parents:
    node = node[part]
  node[leaf] = value


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  # Replicas trained in one program: seeds seed .. seed + num_seeds - 1, times every
  # combination of the `sweep` values (`--config.sweep.learning_rate=1e-4,2e-4`).
  c.num_seeds = 1
  c.sweep = ml_collections.ConfigDict()
  for key in SWEEPABLE:
    node = c.sweep
    *parents, leaf = key.split('.')
    for p in parents:
      if p not in node:
        node[p] = ml_collections.ConfigDict()
      node = node[p]
    node[leaf] = config_dict.placeholder(str)   # 'V1,V2,...'; None = not swept

  # --- data -------------------------------------------------------------------
  c.data = ml_collections.ConfigDict()
  c.data.name = 'charades'           # used for metric length bins and logging
  c.data.dir = ''                    # a dataset written by data_prep/build_dataset.py
  c.data.seed = config_dict.placeholder(int)   # data order and sampling; None = `seed`
  c.data.max_v_l = 128               # clips kept per video (longer videos are truncated)
  c.data.max_q_l = 32                # text tokens kept per query
  c.data.max_windows = 5             # GT windows kept per query
  c.data.length_buckets = (32, 64, 96, 128)   # padded video lengths; last >= max_v_l
  c.data.use_tef = True              # append [i/L, (i+1)/L] to every clip
  c.data.normalize_video = True      # L2 per clip and feature type (done at build time)
  c.data.normalize_text = True       # L2 per token
  c.data.num_saliency_pairs = 2      # sampled positive / negative clips per example
  c.data.worker_count = 0            # grain worker processes (0 = in-process)
  c.data.prefetch = 2                # batches read ahead by grain threads (0 = none)
  c.data.eval_split = 'val'          # split used for periodic evaluation and best ckpt
  c.data.test_split = 'test'

  # --- model ------------------------------------------------------------------
  c.model = ml_collections.ConfigDict()
  c.model.hidden_dim = 256
  c.model.num_heads = 8
  c.model.ffn_dim = 1024
  c.model.dropout = 0.1
  c.model.input_dropout = 0.5
  c.model.n_input_proj = 2
  c.model.t2v_layers = 2
  c.model.enc_layers = 2
  c.model.dec_layers = 2
  c.model.text_position = 'none'     # 'none' (release default) | 'learned'
  c.model.max_q_l = 32               # size of the learned text position table
  c.model.dtype = 'float32'          # compute dtype ('bfloat16' on accelerators)
  c.model.self_condition = False     # denoiser sees its previous x_0 estimate (candidate selfcond)

  # --- diffusion ----------------------------------------------------------------
  c.diffusion = ml_collections.ConfigDict()
  c.diffusion.num_spans = 5          # N_r
  c.diffusion.timesteps = 1000       # T
  c.diffusion.schedule = 'cosine'    # 'cosine' | 'linear'
  c.diffusion.cosine_s = 0.008
  c.diffusion.scale = 2.0            # signal scale lambda
  c.diffusion.sampling_steps = 10    # release default; the paper reports 50
  c.diffusion.eta = 1.0              # DDIM eta (1.0 = stochastic, paper Eq. 6)
  c.diffusion.placeholder_std = 1.0 / 6.0
  c.diffusion.min_width = 0.01
  # Off in the release; recipe candidates (momentdiff_jax/common/recipes.py) set them.
  c.diffusion.self_cond_prob = 0.5   # share of training examples given an estimate
  c.diffusion.eval_num_spans = 0     # spans (noise draws) sampled per query; 0 = num_spans
  c.diffusion.fusion = 'none'        # 'none' | 'wbf' (score-weighted mean) | 'nms'
  c.diffusion.fusion_iou = 0.7       # IoU that puts two sampled spans in one cluster
  c.diffusion.renew_threshold = 0.0  # span renewal below this probability; 0 = off
  c.diffusion.t_power = 1.0          # training t density ~ t^(p-1); 1 = uniform (release)

  # --- losses and matching -----------------------------------------------------
  c.loss = ml_collections.ConfigDict()
  c.loss.span_l1 = 10.0
  c.loss.giou = 1.0
  c.loss.label = 4.0
  c.loss.eos_coef = 0.1              # weight of the background class in the CE
  c.loss.aux = True                  # losses on intermediate decoder layers
  c.loss.sim = 4.0                   # L_sim weight (2 on the anti-bias splits)
  c.loss.sim_variant = 'charades'    # 'charades' | 'antibias' (BCE/ranking x10, contrastive x0.1)
  c.loss.sim_margin = 0.2
  c.loss.sim_temperature = 0.5
  c.loss.label_quality = False       # matched spans' foreground target = their IoU
  c.matcher = ml_collections.ConfigDict()
  c.matcher.cost_span = 10.0
  c.matcher.cost_giou = 1.0
  c.matcher.cost_class = 4.0
  # Off in the release (docs/recipe.md): one-to-many matching for the first
  # `one_to_many_until` of the train steps (recipe plus: all of them), each GT also
  # taking the unmatched spans among its k cheapest.
  c.matcher.one_to_many_k = 0
  c.matcher.one_to_many_until = 0.5

  # --- optimisation -----------------------------------------------------------
  c.batch_size = 32                  # global, over all devices and hosts
  c.eval_batch_size = 64
  c.num_epochs = 100
  c.num_train_steps = -1             # > 0 overrides num_epochs
  c.learning_rate = 2e-4
  c.weight_decay = 1e-4
  c.lr_drop_epochs = 40              # lr x lr_drop_factor every this many epochs (40, 80)
  c.lr_drop_factor = 0.1
  c.grad_clip_norm = 0.1
  # 'release' (the paper's method) | 'plus' | candidates joined by '+' (docs/recipe.md):
  # applied by `recipes.apply_recipe` at the start of training to the keys still at
  # their release values.
  c.recipe = 'release'
  c.lr_schedule = 'step'             # 'step' (release drops) | 'cosine'
  c.lr_warmup_epochs = 0.0           # linear warm-up length (epochs, may be fractional)
  c.ema_decay = 0.0                  # > 0: evaluate / keep best of an EMA of the weights

  # --- bookkeeping --------------------------------------------------------------
  c.log_every_steps = 50
  c.eval_every_steps = -1            # <= 0: once per epoch, as the release (train.py)
  c.checkpoint_every_steps = 1000
  c.max_checkpoints_to_keep = 2
  # A workdir (trained or converted) whose best params start this run (fine-tuning);
  # its video feature sources are matched to this dataset's order.
  c.init_from = ''
  c.tensorboard = False
  c.nms_threshold = -1.0             # temporal NMS at eval; < 0 disables (release default)
  c.max_pred_windows = 10            # windows written per query
  # Window boundaries rounded to multiples of the clip length, as the release's
  # post-processing; round_seconds > 0 sets the unit (0: the data's clip length).
  c.round_windows = True
  c.round_seconds = 0.0

  # --- inference on videos longer than data.max_v_l (docs/long_videos.md) --------
  # Predictor and evaluate.py cut such a video into windows of max_v_l clips (each a
  # "video" as in training, own TEF), run them as one batch and merge the windows'
  # moments; False: the whole video padded to a bucket (Predictor) or cut to its
  # first max_v_l clips (evaluate.py), as before.
  c.inference = ml_collections.ConfigDict()
  c.inference.sliding_windows = True
  c.inference.window_overlap = 0.25      # fraction of max_v_l shared by neighbours
  c.inference.window_nms_threshold = 0.5  # NMS over all windows' moments (< 0: none)
  c.inference.window_join_score = 0.3    # both halves of a moment cut by a border
  # Ranking across windows: 'saliency' = probability x sigmoid(mean clip saliency of
  # the span) (windows without the moment still get confident spans); 'model' = the
  # probability alone.
  c.inference.window_score = 'saliency'
  return c


def data_seed(config) -> int:
  """The seed of the data order and per-example sampling: `data.seed`, else `seed`."""
  s = config.data.get('seed', None)
  return int(config.seed if s is None else s)
