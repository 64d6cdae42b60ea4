"""The `--plots` figures: written, readable back as images, of sensible sizes."""
import matplotlib.image as mpimg
import numpy as np
import pytest

from momentdiff_jax.inference import plots


def _trajectory(rng, steps=10, spans=5):
  final = np.column_stack([rng.uniform(0.2, 0.8, spans), rng.uniform(0.05, 0.4, spans)])
  noise = rng.normal(0.5, 0.5, (spans, 2))  # early steps may leave [0, 1]
  w = np.linspace(0, 1, steps)[:, None, None]
  return noise * (1 - w) + final * w


def _image(path):
  img = mpimg.imread(str(path))
  assert img.ndim == 3 and img.shape[2] in (3, 4)
  # Not blank: a readable figure has many distinct colors.
  assert len(np.unique(img.reshape(-1, img.shape[2]), axis=0)) > 50
  return img


def test_plot_distributions(tmp_path):
  rng = np.random.default_rng(0)
  gt = np.sort(rng.beta(1, 3, (300, 2)), 1)
  pred = np.sort(np.clip(gt + rng.normal(0, 0.05, gt.shape), 0, 1), 1)
  path = plots.plot_distributions(pred, gt[:250], str(tmp_path / 'sub' / 'dist.png'))
  h, w = _image(path).shape[:2]
  assert 300 <= h <= 800 and 1000 <= w <= 2000 and w > 2 * h  # three panels


@pytest.mark.parametrize('spans', [1, 5, 10])
def test_plot_trajectories(tmp_path, spans):
  rng = np.random.default_rng(spans)
  path = plots.plot_trajectories(_trajectory(rng, spans=spans), [[0.3, 0.5]],
                                 str(tmp_path / 'traj.png'), title='a query',
                                 scores=rng.random(spans))
  h, w = _image(path).shape[:2]
  assert 300 <= h <= 900 and 700 <= w <= 2000


def test_plot_trajectory_grid(tmp_path):
  rng = np.random.default_rng(0)
  trajs = [_trajectory(rng, steps=s) for s in (10, 50, 2)]
  gts = [[[0.3, 0.5]], [[0.1, 0.2], [0.6, 0.9]], np.zeros((0, 2))]
  path = plots.plot_trajectory_grid(trajs, gts, str(tmp_path / 'grid.png'),
                                    titles=['q1', 'a long query ' * 10, 'q3'])
  h, w = _image(path).shape[:2]
  assert 600 <= h <= 1600 and 1200 <= w <= 3000
  with pytest.raises(ValueError):
    plots.plot_trajectory_grid([], [], str(tmp_path / 'none.png'))
