"""A tiny stand-in for a Kinetics I3D feature SavedModel, for tests and benchmarks (no download).

It has the real model's calling convention: signature "default" taking float32
[B, F, 224, 224, C] (F = 16 here) and returning {"default": float32 [B, D]}. Its computation is a
fixed linear map of 4 x 4 block means per frame, so a wrong crop, frame order, channel order or value
range changes its output, and `standin_features_numpy` recomputes it independently in numpy.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

STANDIN_FRAMES = 16
_GRID = 4


def standin_weights(channels: int, feature_dim: int = 1024, seed: int = 0) -> np.ndarray:
    """Fixed weights [F * 4 * 4 * C, D] of the stand-in model."""
    rng = np.random.default_rng(seed + channels)
    size = STANDIN_FRAMES * _GRID * _GRID * channels
    return (rng.standard_normal((size, feature_dim)) / np.sqrt(size)).astype(np.float32)


def standin_features_numpy(stacks: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Reference computation of the stand-in: [B, 16, H, W, C] -> [B, D] (float64 math)."""
    batch, frames, height, width, channels = stacks.shape
    blocks = stacks.astype(np.float64).reshape(
        batch, frames, _GRID, height // _GRID, _GRID, width // _GRID, channels).mean(axis=(3, 5))
    return (blocks.reshape(batch, -1) @ weights.astype(np.float64)).astype(np.float32)


class _StandIn(tf.Module):

    def __init__(self, weights: np.ndarray, channels: int, crop: int):
        super().__init__()
        self.weights = tf.Variable(weights, trainable=False)
        self.channels = channels
        self.crop = crop

    def features(self, video: tf.Tensor) -> dict[str, tf.Tensor]:
        batch = tf.shape(video)[0]
        block = self.crop // _GRID
        pooled = tf.nn.avg_pool3d(video, ksize=[1, block, block], strides=[1, block, block],
                                  padding="VALID")
        flat = tf.reshape(pooled, [batch, STANDIN_FRAMES * _GRID * _GRID * self.channels])
        return {"default": tf.matmul(flat, self.weights)}


def build_standin_i3d(directory: str, *, channels: int, feature_dim: int = 1024, seed: int = 0,
                      crop_size: int = 224) -> np.ndarray:
    """Saves a stand-in SavedModel to `directory`; returns its weights for the numpy reference."""
    weights = standin_weights(channels, feature_dim, seed)
    module = _StandIn(weights, channels, crop_size)
    function = tf.function(
        module.features,
        input_signature=[tf.TensorSpec([None, None, crop_size, crop_size, channels], tf.float32,
                                       name="video")])
    tf.saved_model.save(module, directory, signatures={"default": function.get_concrete_function()})
    return weights
