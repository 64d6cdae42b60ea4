"""MomentDiff: condition generator + Video Moment Denoiser, as three entry points.

  encode(video_feat, video_mask, query_feat, query_mask, train) -> cond
  prepare(cond) -> cache                  (condition-only decoder work, once per query)
  denoise(cache, spans, t, train) -> out  (the N_r query rows, once per step)

Call them with `model.apply(variables, ..., method=MomentDiff.encode)`; dropout needs
`rngs={'dropout': key}` when `train=True`. Parameters are float32; activations use
`config.dtype`. Outputs that feed losses (saliency, logits, spans) are float32.

Top-level parameter names follow the release's `state_dict` (its `transformer.` wrapper
is flattened away): input_txt_proj_i, input_vid_proj_i, global_rep_token,
global_rep_pos, [txt_position_embed], t2v_encoder, encoder,
contrastive_align_projection_vid (the saliency head), diffusion_decoder,
diff_span_embed, diff_class_embed.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from momentdiff_jax.model.denoiser import Denoiser
from momentdiff_jax.model.encoder import Encoder, T2VEncoder
from momentdiff_jax.model.layers import (MLP, Dropout, InputProjection, Linear, layer_norm,
                                         xavier_uniform)
from momentdiff_jax.model.position import video_position_embedding

Dtype = Any


class TextPosition(nn.Module):
  """The release's optional TrainablePositionalEncoding (`use_txt_pos`).

  As in the release, the returned "position" is Dropout(LayerNorm(text + table[:Lt])),
  i.e. it contains the text itself.
  """
  max_len: int
  dim: int
  dropout: float
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, text: jax.Array, train: bool) -> jax.Array:
    table = nn.Embed(self.max_len, self.dim, embedding_init=nn.initializers.normal(1.0),
                     param_dtype=jnp.float32, name='position_embeddings').embedding
    x = text + table[:text.shape[1]].astype(self.dtype)[None]
    x = layer_norm(self.dtype, name='LayerNorm')(x)
    return Dropout(self.dropout)(x, deterministic=not train)


class MomentDiff(nn.Module):
  """MomentDiff (NeurIPS 2023) in flax.linen.

  Attributes:
    config: the `config.model` ConfigDict (hidden_dim, num_heads, ffn_dim, dropout,
      input_dropout, n_input_proj, t2v_layers, enc_layers, dec_layers, text_position,
      max_q_l, dtype).
    video_dim: Dv, clip feature size including the 2 TEF features.
    text_dim: Dt, token feature size.
  """
  config: ml_collections.ConfigDict
  video_dim: int
  text_dim: int

  def setup(self):
    c = self.config
    d = c.hidden_dim
    dtype = jnp.dtype(c.dtype)
    n = c.n_input_proj
    self.input_txt_proj = [InputProjection(d, c.input_dropout, relu=i < n - 1, dtype=dtype)
                           for i in range(n)]
    self.input_vid_proj = [InputProjection(d, c.input_dropout, relu=i < n - 1, dtype=dtype)
                           for i in range(n)]
    normal = nn.initializers.normal(1.0)  # torch.randn
    self.global_rep_token = self.param('global_rep_token', normal, (d,), jnp.float32)
    self.global_rep_pos = self.param('global_rep_pos', normal, (d,), jnp.float32)
    if c.text_position == 'learned':
      self.txt_position_embed = TextPosition(c.max_q_l, d, c.input_dropout, dtype)
    elif c.text_position != 'none':
      raise ValueError(f'model.text_position must be none|learned, got {c.text_position!r}')
    self.t2v_encoder = T2VEncoder(c.t2v_layers, d, c.num_heads, c.ffn_dim, c.dropout, dtype)
    self.encoder = Encoder(c.enc_layers, d, c.num_heads, c.ffn_dim, c.dropout, dtype)
    # Saliency head; the release calls it contrastive_align_projection_vid.
    self.contrastive_align_projection_vid = Linear(1, dtype=dtype)
    self.diffusion_decoder = Denoiser(c.dec_layers, d, c.num_heads, c.ffn_dim, c.dropout, dtype,
                                      self_condition=bool(c.get('self_condition', False)))
    self.diff_span_embed = MLP(d, 2, 1, dtype=dtype)
    self.diff_class_embed = Linear(2, kernel_init=xavier_uniform, dtype=dtype)

  @property
  def _dtype(self):
    return jnp.dtype(self.config.dtype)

  def encode(self, video_feat: jax.Array, video_mask: jax.Array, query_feat: jax.Array,
             query_mask: jax.Array, train: bool = False) -> dict:
    """The condition F and the saliency scores.

    Args:
      video_feat: (B, Lv, Dv); video_mask: (B, Lv), 1 for real clips (a prefix).
      query_feat: (B, Lt, Dt); query_mask: (B, Lt), 1 for real tokens.
    Returns:
      {'memory': (B, Lv, D) fusion embedding of the video tokens (global token
       dropped, as the release's decoder memory), 'pos': (B, Lv, D) clip sine
       positions, 'mask': (B, Lv), 'saliency': (B, Lv) float32 clip scores}.
    """
    vid, txt, pos_txt = self._project(video_feat, query_feat, train)
    return self._fuse(vid, video_mask, txt, pos_txt, query_mask, train)

  def encode_with_negative(self, video_feat: jax.Array, video_mask: jax.Array,
                           query_feat: jax.Array, query_mask: jax.Array,
                           train: bool = False) -> tuple[dict, jax.Array]:
    """`encode` plus the negative pair's saliency (B, Lv) for L_sim, as the release's
    training forward: inputs are projected once (one dropout draw), and the negative
    pass pairs each video with the projected text of the next example in the batch
    (text positions are the positive pass's, as the release reuses them)."""
    vid, txt, pos_txt = self._project(video_feat, query_feat, train)
    cond = self._fuse(vid, video_mask, txt, pos_txt, query_mask, train)
    neg = self._fuse(vid, video_mask, jnp.roll(txt, -1, axis=0), pos_txt,
                     jnp.roll(query_mask, -1, axis=0), train)
    return cond, neg['saliency']

  def _project(self, video_feat, query_feat, train: bool):
    """Input projections: (B, Lv, Dv), (B, Lt, Dt) -> (B, Lv, D), (B, Lt, D), text pos."""
    dtype = self._dtype
    vid = video_feat.astype(dtype)
    for block in self.input_vid_proj:
      vid = block(vid, train)
    txt = query_feat.astype(dtype)
    for block in self.input_txt_proj:
      txt = block(txt, train)
    if self.config.text_position == 'learned':
      pos_txt = self.txt_position_embed(txt, train)
    else:
      pos_txt = jnp.zeros_like(txt)
    return vid, txt, pos_txt

  def _fuse(self, vid, video_mask, txt, pos_txt, query_mask, train: bool) -> dict:
    """Condition generator + encoder + saliency head on projected inputs."""
    d, dtype = self.config.hidden_dim, self._dtype
    pos_vid = video_position_embedding(video_mask, d).astype(dtype)
    vid = self.t2v_encoder(vid, pos_vid, txt, pos_txt, query_mask, train=train)
    b = vid.shape[0]
    tok = jnp.broadcast_to(self.global_rep_token.astype(dtype), (b, 1, d))
    tok_pos = jnp.broadcast_to(self.global_rep_pos.astype(dtype), (b, 1, d))
    x = jnp.concatenate([tok, vid], axis=1)
    pos = jnp.concatenate([tok_pos, pos_vid], axis=1)
    mask = jnp.concatenate([jnp.ones((b, 1), video_mask.dtype), video_mask], axis=1)
    memory = self.encoder(x, pos, mask, train=train)[:, 1:]
    saliency = self.contrastive_align_projection_vid(memory)[..., 0].astype(jnp.float32)
    return {'memory': memory, 'pos': pos_vid, 'mask': video_mask, 'saliency': saliency}

  def prepare(self, cond: dict) -> dict:
    """cond (from `encode`) -> cache: per decoder layer keys (B, Lv, H, 2D/H) and values
    (B, Lv, H, D/H), plus the clip mask. No dropout happens here."""
    return self.diffusion_decoder.prepare(cond['memory'], cond['pos'], cond['mask'])

  def denoise(self, cache: dict, spans: jax.Array, t: jax.Array, train: bool = False,
              prev_spans=None) -> dict:
    """One denoiser pass.

    Args:
      cache: from `prepare`.
      spans: (B, N, 2) noisy (center, width) in [0, 1]; clamped into ~[1e-3, 1 - 1e-3].
      t: (B,) int32 diffusion steps.
      prev_spans: (B, N, 2) previous x_0 estimate (model.self_condition only).
    Returns:
      {'pred_logits': (Ld, B, N, 2) float32, index 0 = foreground;
       'pred_spans': (Ld, B, N, 2) float32 sigmoid of the span head, (center, width)}.
      The span head reads the layer's features only; the input spans are not added
      as a reference (the release does not).
    """
    hs = self.diffusion_decoder(cache, spans, t, train, prev_spans)
    logits = self.diff_class_embed(hs).astype(jnp.float32)
    pred_spans = jax.nn.sigmoid(self.diff_span_embed(hs).astype(jnp.float32))
    return {'pred_logits': logits, 'pred_spans': pred_spans}

  def __call__(self, video_feat, video_mask, query_feat, query_mask, spans, t,
               train: bool = False) -> dict:
    """encode -> prepare -> denoise; returns denoise's dict plus 'saliency' (B, Lv)."""
    cond = self.encode(video_feat, video_mask, query_feat, query_mask, train)
    out = self.denoise(self.prepare(cond), spans, t, train)
    return dict(out, saliency=cond['saliency'])


def abstract_params(model_config, video_dim: int, text_dim: int):
  """MomentDiff's params tree as ShapeDtypeStructs (nothing allocated or computed)."""
  model = MomentDiff(model_config, video_dim, text_dim)
  args = (jnp.zeros((1, 8, video_dim)), jnp.ones((1, 8)), jnp.zeros((1, 4, text_dim)),
          jnp.ones((1, 4)), jnp.full((1, 2, 2), 0.5), jnp.zeros((1,), jnp.int32))
  return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *args))['params']


def count_params(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))
