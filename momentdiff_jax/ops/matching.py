"""Exact minimum-cost bipartite matching in pure JAX (jit / vmap, no host callback).

`linear_sum_assignment` is the shortest-augmenting-path Hungarian algorithm (Kuhn-
Munkres with potentials, the O(n^2 m) "e-maxx" form of Jonker-Volgenant): one
augmentation per valid GT column, each a Dijkstra-like search over the prediction
rows written as a `lax.while_loop` of vectorized steps. For our sizes (N <= 20
predictions, M <= N GT windows) this is a few hundred tiny vector ops per example,
cheap next to the model, and exact (not an auction / Sinkhorn approximation).

`match_batch` builds the DETR / release cost (10 L1(cw) - 1 GIoU - 4 p_fg) and vmaps.
"""
import jax
import jax.numpy as jnp

from momentdiff_jax.ops import spans as span_ops


def linear_sum_assignment(cost, col_mask=None):
  """Minimum-cost assignment of every valid column to a distinct row.

  Args:
    cost: `(N, M)` float, N rows (predictions) >= M columns (GT windows).
    col_mask: `(M,)` bool, False = padded column (left unassigned). Default all valid.
  Returns:
    row_for_col: `(M,)` int32, the row assigned to each column (-1 if masked).
    col_for_row: `(N,)` int32, the column assigned to each row (-1 if none).
  Same optimum as `scipy.optimize.linear_sum_assignment(cost[:, col_mask])`.
  """
  n, m = cost.shape
  if m > n:
    raise ValueError(f'need M <= N (columns <= rows), got cost of shape {cost.shape}')
  if col_mask is None:
    col_mask = jnp.ones((m,), bool)
  # Work on the transpose: "agents" = GT columns (1..m), "jobs" = predictions (1..n);
  # index 0 on both sides is the algorithm's sentinel.
  # Non-finite costs would stall the search (argmin over all-inf); clip them.
  cost = jnp.clip(jnp.nan_to_num(cost.astype(jnp.float32), nan=1e6), -1e6, 1e6)
  a = jnp.zeros((m + 1, n + 1), jnp.float32).at[1:, 1:].set(cost.T)
  inf = jnp.float32(jnp.inf)

  def augment(i, state):
    u, v, p = state        # p[j] = agent holding job j (0 = free), p[0] = current agent
    valid = col_mask[i - 1]
    p = p.at[0].set(i)     # the search never changes p: closed over, not carried

    def search_cond(s):
      # The count bound only matters for pathological input; n + 1 steps suffice.
      return s[-1] & (s[-2] <= n)

    def search_body(s):
      u, v, minv, way, used, j0, k, _ = s
      used = used.at[j0].set(True)
      i0 = p[j0]
      cur = a[i0] - u[i0] - v
      better = (~used) & (cur < minv)
      minv = jnp.where(better, cur, minv)
      way = jnp.where(better, j0, way)
      masked = jnp.where(used, inf, minv)
      j1 = jnp.argmin(masked).astype(jnp.int32)
      delta = masked[j1]
      # Potentials: used jobs (and their agents) move by delta, the rest lower minv.
      u = u.at[p].add(jnp.where(used, delta, 0.0))
      v = jnp.where(used, v - delta, v)
      minv = jnp.where(used, minv, minv - delta)
      return u, v, minv, way, used, j1, k + 1, p[j1] != 0

    s0 = (u, v, jnp.full((n + 1,), inf), jnp.zeros((n + 1,), jnp.int32),
          jnp.zeros((n + 1,), bool), jnp.int32(0), jnp.int32(0), valid)
    u, v, _, way, _, j0, _, _ = jax.lax.while_loop(search_cond, search_body, s0)

    # Flip the alternating path back to the sentinel (j0 == 0 when the column is
    # masked: nothing to do).
    def flip_cond(s):
      return s[1] != 0

    def flip_body(s):
      p, j0 = s
      j1 = way[j0]
      return p.at[j0].set(p[j1]), j1

    p, _ = jax.lax.while_loop(flip_cond, flip_body, (p, jnp.where(valid, j0, 0)))
    return u, v, p

  state = (jnp.zeros((m + 1,), jnp.float32), jnp.zeros((n + 1,), jnp.float32),
           jnp.zeros((n + 1,), jnp.int32))
  _, _, p = jax.lax.fori_loop(1, m + 1, augment, state)
  col_for_row = p[1:] - 1                                      # (N,), -1 = free
  row_for_col = jnp.full((m,), -1, jnp.int32).at[
      jnp.where(col_for_row >= 0, col_for_row, m)].set(
          jnp.arange(n, dtype=jnp.int32), mode='drop')
  return row_for_col, col_for_row.astype(jnp.int32)


def match_cost(pred_logits, pred_spans, tgt_spans, cfg):
  """Release matching cost for one example.

  pred_logits `(N, 2)` (index 0 = foreground), pred_spans `(N, 2)` cw, tgt_spans
  `(M, 2)` cw, cfg = `config.matcher` (cost_span, cost_giou, cost_class).
  Returns `(N, M)`: cost_span * L1 + cost_giou * (-GIoU) + cost_class * (-p_fg).
  """
  p_fg = jax.nn.softmax(pred_logits.astype(jnp.float32), axis=-1)[:, 0]
  l1 = jnp.abs(pred_spans[:, None, :] - tgt_spans[None, :, :]).sum(-1)
  giou = span_ops.pairwise_giou(span_ops.cw_to_se(pred_spans), span_ops.cw_to_se(tgt_spans))
  cost = cfg.cost_span * l1 - cfg.cost_giou * giou - cfg.cost_class * p_fg[:, None]
  return cost


def add_one_to_many(cost, col_mask, col_for_row, k: int):
  """One-to-many extension of a one-to-one assignment (dynamic-k style matching).

  Every prediction the assignment left unmatched is also given a GT column when its
  cost is among the `k` lowest of that valid column (the column's k nearest
  predictions); of several such columns it takes the cheapest. The one-to-one pairs
  stay, so each GT keeps its Hungarian prediction and gains at most k - 1 more.

  Args:
    cost: `(N, M)`; col_mask: `(M,)` bool; col_for_row: `(N,)` int32 (-1 = none).
  Returns:
    `(N,)` int32 column per row (-1 = background).
  """
  rank = jnp.argsort(jnp.argsort(cost, axis=0), axis=0)       # row i's rank in column j
  near = (rank < k) & col_mask[None, :]
  best = jnp.argmin(jnp.where(near, cost, jnp.inf), axis=1).astype(jnp.int32)
  extra = jnp.where(near.any(axis=1), best, -1)
  return jnp.where(col_for_row >= 0, col_for_row, extra)


def match_batch(pred_logits, pred_spans, tgt_spans, tgt_mask, cfg, one_to_many=False):
  """Hungarian matching per example (vmapped), gradients stopped.

  Args:
    pred_logits: `(B, N, 2)`; pred_spans: `(B, N, 2)` cw in [0, 1];
    tgt_spans: `(B, M, 2)` cw; tgt_mask: `(B, M)` 1/True for real GT; M <= N.
    cfg: `config.matcher`; with `one_to_many_k` > 1 and `one_to_many` true (a bool,
      may be traced) the assignment is extended by `add_one_to_many`.
  Returns dict:
    pred_idx_for_tgt `(B, M)` int32 (-1 for padded GT; the one-to-one pairs),
    tgt_idx_for_pred `(B, N)` int32 (-1 for unmatched predictions),
    matched `(B, N)` bool.
  """
  pred_logits = jax.lax.stop_gradient(pred_logits)
  pred_spans = jax.lax.stop_gradient(pred_spans)
  cost = jax.vmap(lambda l, s, t: match_cost(l, s, t, cfg))(pred_logits, pred_spans, tgt_spans)
  row_for_col, col_for_row = jax.vmap(linear_sum_assignment)(cost, tgt_mask > 0)
  k = int(cfg.get('one_to_many_k', 0))
  if k > 1:
    many = jax.vmap(lambda c, m, r: add_one_to_many(c, m, r, k))(cost, tgt_mask > 0,
                                                                 col_for_row)
    col_for_row = jnp.where(one_to_many, many, col_for_row)
  return dict(pred_idx_for_tgt=row_for_col, tgt_idx_for_pred=col_for_row,
              matched=col_for_row >= 0)
