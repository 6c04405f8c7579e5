"""Inception-I3D (Carreira and Zisserman, "Quo Vadis, Action Recognition?", CVPR 2017) as a Keras 3 model.

The Inception-v1 network inflated to 3D, written from the paper and the layer list of DeepMind's release:
a 7x7x7 stride-2 stem, two 2D max pools, nine Inception blocks ("Mixed_*") separated by 3D max pools, then
the classifier (average pool over [2, 7, 7] windows, a 1x1x1 convolution with bias, mean over time).
Channels last; every convolution and max pool uses TensorFlow's 'SAME' padding like the original (for a
stride-2 kernel of odd size the extra padded row goes after the input, and a max pool never sees the
padding), and every convolution is followed by batch normalization without scale (epsilon 1e-3) and a
ReLU, except the classifier.

Input: float32 [B, T, H, W, C] (C = 3 for RGB, 2 for optical flow) in [-1, 1]; the released weights
expect 224 x 224 frames. Output of `call`: {"features": [B, 1024], "logits": [B, num_classes]}.

`features` is the classifier's input averaged over time: the original average-pools Mixed_5c
[B, T', 7, 7, 1024] over [2, 7, 7] windows with stride 1 ('VALID'), applies the 1x1x1 classifier to each
of the T' - 1 windows and averages the logits over time; the classifier is linear, so the same logits
come from the time-average of the pooled windows, which is this 1024-d vector. It is computed as a
weighted mean over time (the two end steps of Mixed_5c count half, the others once, divided by T' - 1)
of the spatial mean, which equals that pooling for 224 x 224 input and, unlike a literal [2, 7, 7]
pool, also works for the smaller inputs the tests use and for T' = 1 (up to 8 frames: the plain mean).
On a 16-frame stack T' = 2 and it is the mean over time and space of Mixed_5c.

Dropout before the classifier (keep probability 1 at inference in the original) is left out: the model
is for inference with pretrained weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

# Endpoints in network order (the original's names); `InceptionI3d.endpoints` returns them.
ENDPOINTS = (
    "Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3", "MaxPool3d_3a_3x3",
    "Mixed_3b", "Mixed_3c", "MaxPool3d_4a_3x3", "Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e",
    "Mixed_4f", "MaxPool3d_5a_2x2", "Mixed_5b", "Mixed_5c",
)

# Output channels of an Inception block's branches: (branch 0 1x1, branch 1 1x1, branch 1 3x3,
# branch 2 1x1, branch 2 3x3, branch 3 1x1 after a 3x3x3 max pool). Paper table / original layer list.
MIXED_WIDTHS: dict[str, tuple[int, int, int, int, int, int]] = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}

# Max pools between the blocks: (window, strides), both [t, h, w]. The first two pool only in space.
MAX_POOLS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "MaxPool3d_2a_3x3": ((1, 3, 3), (1, 2, 2)),
    "MaxPool3d_3a_3x3": ((1, 3, 3), (1, 2, 2)),
    "MaxPool3d_4a_3x3": ((3, 3, 3), (2, 2, 2)),
    "MaxPool3d_5a_2x2": ((2, 2, 2), (2, 2, 2)),
}

FEATURE_DIM = 1024  # channels of Mixed_5c: 384 + 384 + 128 + 128
LOGITS_SCOPE = "Logits/Conv3d_0c_1x1"  # the classifier's name in the original


def _tuple3(value: int | Sequence[int]) -> tuple[int, int, int]:
    if isinstance(value, int):
        return (value, value, value)
    return tuple(int(v) for v in value)  # type: ignore[return-value]


@keras.saving.register_keras_serializable(package="stpn_tf")
class Unit3D(keras.layers.Layer):
    """Conv3D ('SAME', no bias) + batch normalization (no scale, epsilon 1e-3) + ReLU.

    Args:
        output_channels: Filters of the convolution.
        kernel_shape: [t, h, w] kernel size.
        strides: [t, h, w] strides.
        use_batch_norm: Batch normalization after the convolution.
        use_bias: Bias in the convolution (only the classifier of the original has one).
        activation: "relu" or None.
    """

    def __init__(self, output_channels: int, kernel_shape: int | Sequence[int] = 1,
                 strides: int | Sequence[int] = 1, use_batch_norm: bool = True, use_bias: bool = False,
                 activation: str | None = "relu", **kwargs: Any):
        super().__init__(**kwargs)
        self.output_channels = int(output_channels)
        self.kernel_shape = _tuple3(kernel_shape)
        self.strides = _tuple3(strides)
        self.use_batch_norm = bool(use_batch_norm)
        self.use_bias = bool(use_bias)
        self.activation = activation
        self.conv = keras.layers.Conv3D(self.output_channels, self.kernel_shape, strides=self.strides,
                                        padding="same", use_bias=self.use_bias, data_format="channels_last",
                                        name="conv_3d")
        # momentum only matters for training; 0.999 is the original's decay.
        self.batch_norm = (keras.layers.BatchNormalization(axis=-1, epsilon=1e-3, momentum=0.999, scale=False,
                                                           name="batch_norm")
                           if self.use_batch_norm else None)

    def build(self, input_shape: Sequence[int | None]) -> None:
        self.conv.build(input_shape)
        if self.batch_norm is not None:
            self.batch_norm.build(self.conv.compute_output_shape(input_shape))
        self.built = True

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        return self.conv.compute_output_shape(input_shape)

    def call(self, inputs: Any, training: bool = False) -> Any:
        net = self.conv(inputs)
        if self.batch_norm is not None:
            net = self.batch_norm(net, training=training)
        if self.activation == "relu":
            net = ops.relu(net)
        return net

    def tf1_variables(self) -> dict[str, Any]:
        """This unit's variables under the original's names (relative to the unit's scope).

        Returns:
            {"conv_3d/w": kernel [t, h, w, in, out], ("conv_3d/b": [out],) "batch_norm/beta": [out],
            "batch_norm/moving_mean": [out], "batch_norm/moving_variance": [out]}.
        """
        out = {"conv_3d/w": self.conv.kernel}
        if self.use_bias:
            out["conv_3d/b"] = self.conv.bias
        if self.batch_norm is not None:
            out["batch_norm/beta"] = self.batch_norm.beta
            out["batch_norm/moving_mean"] = self.batch_norm.moving_mean
            out["batch_norm/moving_variance"] = self.batch_norm.moving_variance
        return out

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(output_channels=self.output_channels, kernel_shape=list(self.kernel_shape),
                      strides=list(self.strides), use_batch_norm=self.use_batch_norm, use_bias=self.use_bias,
                      activation=self.activation)
        return config


@keras.saving.register_keras_serializable(package="stpn_tf")
class InceptionBlock(keras.layers.Layer):
    """One "Mixed" block: four branches concatenated along channels.

    Branch 0: 1x1x1. Branch 1: 1x1x1 then 3x3x3. Branch 2: 1x1x1 then 3x3x3. Branch 3: 3x3x3 max pool
    (stride 1, 'SAME') then 1x1x1.

    Args:
        widths: The six output widths, see `MIXED_WIDTHS`.
        branch2_second_name: The original's scope name of branch 2's 3x3x3 unit: "Conv3d_0b_3x3",
            except in Mixed_5b, where DeepMind's checkpoints call it "Conv3d_0a_3x3".
    """

    def __init__(self, widths: Sequence[int], branch2_second_name: str = "Conv3d_0b_3x3", **kwargs: Any):
        super().__init__(**kwargs)
        self.widths = tuple(int(w) for w in widths)
        self.branch2_second_name = branch2_second_name
        w = self.widths
        # (scope under the block in the original, unit). Keras layer names cannot hold "/".
        self.units = [
            ("Branch_0/Conv3d_0a_1x1", Unit3D(w[0], 1, name="Branch_0_Conv3d_0a_1x1")),
            ("Branch_1/Conv3d_0a_1x1", Unit3D(w[1], 1, name="Branch_1_Conv3d_0a_1x1")),
            ("Branch_1/Conv3d_0b_3x3", Unit3D(w[2], 3, name="Branch_1_Conv3d_0b_3x3")),
            ("Branch_2/Conv3d_0a_1x1", Unit3D(w[3], 1, name="Branch_2_Conv3d_0a_1x1")),
            (f"Branch_2/{branch2_second_name}", Unit3D(w[4], 3, name=f"Branch_2_{branch2_second_name}")),
            ("Branch_3/Conv3d_0b_1x1", Unit3D(w[5], 1, name="Branch_3_Conv3d_0b_1x1")),
        ]
        self.pool = keras.layers.MaxPooling3D(pool_size=3, strides=1, padding="same",
                                              data_format="channels_last", name="Branch_3_MaxPool3d_0a_3x3")

    def build(self, input_shape: Sequence[int | None]) -> None:
        shape = tuple(input_shape)
        u = [unit for _, unit in self.units]
        u[0].build(shape)
        u[1].build(shape)
        u[2].build(shape[:-1] + (self.widths[1],))
        u[3].build(shape)
        u[4].build(shape[:-1] + (self.widths[3],))
        u[5].build(shape)
        self.built = True

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        w = self.widths
        return tuple(input_shape[:-1]) + (w[0] + w[2] + w[4] + w[5],)

    def call(self, inputs: Any, training: bool = False) -> Any:
        u = [unit for _, unit in self.units]
        branch_0 = u[0](inputs, training=training)
        branch_1 = u[2](u[1](inputs, training=training), training=training)
        branch_2 = u[4](u[3](inputs, training=training), training=training)
        branch_3 = u[5](self.pool(inputs), training=training)
        return ops.concatenate([branch_0, branch_1, branch_2, branch_3], axis=-1)

    def tf1_variables(self) -> dict[str, Any]:
        """The block's variables under the original's names relative to the block's scope."""
        return {f"{scope}/{key}": variable for scope, unit in self.units
                for key, variable in unit.tf1_variables().items()}

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(widths=list(self.widths), branch2_second_name=self.branch2_second_name)
        return config


def pool_features(mixed_5c: Any) -> Any:
    """The classifier's input averaged over time: [B, T', H', W', C] -> [B, C].

    The original averages [2, 7, 7] windows ('VALID', stride 1) of the 7 x 7 map and then the per-window
    logits over the T' - 1 windows. Each time step t lies in the windows t - 1 and t, except the first and
    last, which lie in one; so the result is sum_t c_t x_t / (T' - 1) with c = 1/2 at both ends and 1
    elsewhere, of the spatial mean x_t. With T' = 1 the single step is returned.
    """
    spatial = ops.mean(mixed_5c, axis=(2, 3))  # [B, T', C]
    steps = ops.cast(ops.shape(spatial)[1], spatial.dtype)
    several = ops.cast(steps > 1.0, spatial.dtype)
    ends = 0.5 * several * (spatial[:, 0] + spatial[:, -1])
    return (ops.sum(spatial, axis=1) - ends) / ops.maximum(steps - 1.0, 1.0)


@keras.saving.register_keras_serializable(package="stpn_tf")
class InceptionI3d(keras.Model):
    """Inception-v1 I3D up to Mixed_5c, the pooled 1024-d feature and the class logits.

    Args:
        num_classes: Width of the classifier (400 for Kinetics-400, 600 for Kinetics-600).
        name: Model name.

    Call: inputs float32 [B, T, H, W, C] in [-1, 1] (C fixed by the first call or `build`) ->
    {"features": [B, 1024], "logits": [B, num_classes]}.
    """

    def __init__(self, num_classes: int = 400, name: str = "inception_i3d", **kwargs: Any):
        super().__init__(name=name, **kwargs)
        self.num_classes = int(num_classes)
        stages: list[tuple[str, keras.layers.Layer]] = []
        for endpoint in ENDPOINTS:
            if endpoint == "Conv3d_1a_7x7":
                layer = Unit3D(64, 7, strides=2, name=endpoint)
            elif endpoint == "Conv3d_2b_1x1":
                layer = Unit3D(64, 1, name=endpoint)
            elif endpoint == "Conv3d_2c_3x3":
                layer = Unit3D(192, 3, name=endpoint)
            elif endpoint in MAX_POOLS:
                window, strides = MAX_POOLS[endpoint]
                layer = keras.layers.MaxPooling3D(pool_size=window, strides=strides, padding="same",
                                                  data_format="channels_last", name=endpoint)
            else:
                layer = InceptionBlock(MIXED_WIDTHS[endpoint], name=endpoint,
                                       branch2_second_name="Conv3d_0a_3x3" if endpoint == "Mixed_5b"
                                       else "Conv3d_0b_3x3")
            stages.append((endpoint, layer))
        self.stages = stages
        # The original's 1x1x1 convolution with bias on the pooled map, as a dense layer on the pooled vector.
        self.classifier = keras.layers.Dense(self.num_classes, name="Logits_Conv3d_0c_1x1")

    def build(self, input_shape: Sequence[int | None]) -> None:
        shape = tuple(input_shape)
        for _, layer in self.stages:
            layer.build(shape)
            shape = tuple(layer.compute_output_shape(shape))
        self.classifier.build((shape[0], shape[-1]))
        self.built = True

    def endpoints(self, inputs: Any, final_endpoint: str = "Mixed_5c", training: bool = False) -> dict[str, Any]:
        """Every endpoint up to `final_endpoint`, in network order.

        Args:
            inputs: float32 [B, T, H, W, C] in [-1, 1].
            final_endpoint: One of `ENDPOINTS`.
            training: Batch normalization mode (False: the moving statistics).

        Returns:
            {endpoint name: [B, T_k, H_k, W_k, C_k]}.
        """
        if final_endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {final_endpoint!r} (one of {', '.join(ENDPOINTS)})")
        out = {}
        net = inputs
        for endpoint, layer in self.stages:
            net = layer(net, training=training) if isinstance(layer, (Unit3D, InceptionBlock)) else layer(net)
            out[endpoint] = net
            if endpoint == final_endpoint:
                break
        return out

    def call(self, inputs: Any, training: bool = False) -> dict[str, Any]:
        mixed_5c = self.endpoints(inputs, "Mixed_5c", training=training)["Mixed_5c"]
        features = pool_features(mixed_5c)
        return {"features": features, "logits": self.classifier(features)}

    def tf1_variables(self) -> dict[str, Any]:
        """All variables under the original's names relative to "inception_i3d/".

        E.g. "Conv3d_1a_7x7/conv_3d/w" [7, 7, 7, C, 64], "Mixed_5b/Branch_2/Conv3d_0a_3x3/batch_norm/beta",
        "Logits/Conv3d_0c_1x1/conv_3d/w" (here a [1024, num_classes] dense kernel; the original's is
        [1, 1, 1, 1024, num_classes]). The model must be built.
        """
        out: dict[str, Any] = {}
        for endpoint, layer in self.stages:
            if isinstance(layer, (Unit3D, InceptionBlock)):
                out.update({f"{endpoint}/{key}": v for key, v in layer.tf1_variables().items()})
        out[f"{LOGITS_SCOPE}/conv_3d/w"] = self.classifier.kernel
        out[f"{LOGITS_SCOPE}/conv_3d/b"] = self.classifier.bias
        return out

    def get_config(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "name": self.name}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "InceptionI3d":
        return cls(**config)


def build_i3d(*, channels: int = 3, num_classes: int = 400) -> InceptionI3d:
    """An InceptionI3d with its variables created (zero-initialized statistics, random kernels).

    Args:
        channels: 3 for RGB, 2 for optical flow.
        num_classes: Classifier width.
    """
    model = InceptionI3d(num_classes=num_classes)
    model.build((None, None, None, None, channels))
    return model
