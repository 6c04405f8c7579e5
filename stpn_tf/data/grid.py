"""The test-time snippet grid (spec section 2), the one step between real snippets and the models.

At test time every video is seen on `length` positions (400 in the paper): position t takes real snippet
`floor(t * L / length)` of the video's L snippets, so short videos repeat snippets. With `all_snippets`
the models see every real snippet instead (finer boundaries, one position per snippet).
`sample_grid` is that step for a padded batch; the serving graph (stpn_tf.inference) runs it, so the
export, `stpn localize` and Beam share it.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from stpn_tf.core.errors import StpnError

#: Snippets sampled per video in training and testing (spec section 2).
DEFAULT_GRID_LENGTH = 400


@dataclasses.dataclass(frozen=True)
class GridConfig:
    """Where the models look at test time.

    Attributes:
      length: Grid positions per video (400 in the paper).
      all_snippets: Use every real snippet instead of the grid (`length` is then unused).
    """

    length: int = DEFAULT_GRID_LENGTH
    all_snippets: bool = False

    def __post_init__(self):
        if int(self.length) != self.length or self.length < 1:
            raise StpnError(f"grid length must be a positive integer, got {self.length}")

    @property
    def grid_length(self) -> int | None:
        """Positions localized per video, None when every real snippet is used."""
        return None if self.all_snippets else int(self.length)


def eval_grid_indices_tf(num_snippets: tf.Tensor, length: int = DEFAULT_GRID_LENGTH) -> tf.Tensor:
    """Snippet indices of the deterministic test grid for a batch, `floor(t * L / T)`.

    Integer arithmetic gives exactly the floor of the real quotient (no float rounding).

    Args:
      num_snippets: int [B], real snippet counts L (>= 1; 0 gives all-zero indices).
      length: Static grid length T.

    Returns:
      int32 [B, T] snippet indices, `floor(t * L / T)`.
    """
    num_snippets = tf.cast(num_snippets, tf.int64)
    positions = tf.range(length, dtype=tf.int64)
    indices = (positions[tf.newaxis, :] * num_snippets[:, tf.newaxis]) // length
    return tf.cast(indices, tf.int32)


def sample_grid(features: tf.Tensor, num_snippets: tf.Tensor, grid: GridConfig):
    """Padded real snippets -> what the models see.

    Args:
      features: float32 [B, time, D], rows past each video's `num_snippets` are padding.
      num_snippets: int32 [B] real snippets L per video, already clipped to [0, time].
      grid: The grid settings.

    Returns:
      (features [B, T, D] with T = grid.length, or time with all_snippets; mask float32 [B, T], 1 for
      positions that hold a real snippet; lengths int32 [B], valid positions per video: T, L with
      all_snippets, and 0 for an empty video).
    """
    time_steps = tf.shape(features)[1]
    if grid.all_snippets:
        return features, tf.sequence_mask(num_snippets, time_steps, dtype=tf.float32), num_snippets
    indices = eval_grid_indices_tf(num_snippets, grid.length)                            # [B, T]
    # An empty video (L = 0) yields indices 0; clamp so the gather stays in range for time = 0 too.
    indices = tf.minimum(indices, tf.maximum(time_steps - 1, 0))
    sampled = tf.gather(features, indices, batch_dims=1)
    has_snippets = num_snippets > 0
    mask = tf.cast(tf.broadcast_to(has_snippets[:, tf.newaxis], tf.shape(indices)), tf.float32)
    lengths = tf.where(has_snippets, grid.length, 0)
    return sampled, mask, lengths
