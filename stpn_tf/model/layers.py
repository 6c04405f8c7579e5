"""Building blocks of one STPN stream: the attention module and the classifier head."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="stpn_tf")
class AttentionModule(keras.layers.Layer):
    """Class-agnostic attention (paper section 3.1): Dense(units) -> ReLU -> Dense(1) -> sigmoid.

    Args:
        units: width of the hidden layer (256 in the paper).

    Call:
        features: `[B, T, D]` snippet features.

    Returns:
        `[B, T]` attention weights in (0, 1).
    """

    def __init__(self, units: int = 256, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.hidden = keras.layers.Dense(units, activation="relu", name="hidden")
        self.score = keras.layers.Dense(1, name="score")

    def build(self, input_shape):
        self.hidden.build(input_shape)
        self.score.build(tuple(input_shape[:-1]) + (self.units,))
        super().build(input_shape)

    def call(self, features):
        return ops.sigmoid(ops.squeeze(self.score(self.hidden(features)), axis=-1))

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="stpn_tf")
class ClassifierHead(keras.layers.Layer):
    """Linear classifier `Dense(C)` with bias, applied to pooled features and, without bias, per snippet.

    The per-snippet application without the bias is the temporal class activation map (T-CAM, eq. 4):
    `a_t^c = sum_k w^c(k) x_t(k)`.

    Args:
        num_classes: number of action classes C.
    """

    def __init__(self, num_classes: int, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes

    def build(self, input_shape):
        dim = input_shape[-1]
        self.kernel = self.add_weight(
            name="kernel", shape=(dim, self.num_classes), initializer="glorot_uniform"
        )
        self.bias = self.add_weight(name="bias", shape=(self.num_classes,), initializer="zeros")
        super().build(input_shape)

    def call(self, pooled):
        """`[B, D]` pooled features -> `[B, C]` video logits."""
        return ops.matmul(pooled, self.kernel) + self.bias

    def tcam(self, features):
        """`[B, T, D]` snippet features -> `[B, T, C]` T-CAM (no bias)."""
        return ops.matmul(features, self.kernel)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}
