"""The STPN model for one feature stream (paper section 3, Figure 2)."""

from __future__ import annotations

import dataclasses
import os

import keras
import tensorflow as tf
from keras import ops

from stpn_tf.core.errors import StpnError
from stpn_tf.model import losses
from stpn_tf.model.layers import AttentionModule, ClassifierHead

VARIANTS = ("full", "no_sparsity", "no_attention")
POOLINGS = ("mean", "sum")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The architecture and loss settings of one stream (spec section 1); the STPN keywords.

    Attributes:
      attention_units: Hidden width of the attention module (256).
      pooling: "mean" (the public reproduction) or "sum" (eq. 1 as written).
      variant: "full", "no_sparsity" or "no_attention" (ablations, section 4.4).
      beta: Weight of the sparsity loss (1e-4).
      topk_weight: Weight of W-TALC's top-k MIL loss added to eq. 2 (0: the paper's loss only).
    """

    attention_units: int = 256
    pooling: str = "mean"
    variant: str = "full"
    beta: float = 1e-4
    topk_weight: float = 0.0

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise StpnError(f"unknown model variant {self.variant!r}; expected one of {VARIANTS}")
        if self.pooling not in POOLINGS:
            raise StpnError(f"unknown pooling {self.pooling!r}; expected one of {POOLINGS}")
        if int(self.attention_units) != self.attention_units or self.attention_units < 1:
            raise StpnError(f"attention_units must be a positive integer, got {self.attention_units}")
        if not self.topk_weight >= 0:
            raise StpnError(f"topk_weight must be >= 0, got {self.topk_weight}")

    def build(self, num_classes: int) -> "STPN":
        return STPN(num_classes, **dataclasses.asdict(self))


@keras.saving.register_keras_serializable(package="stpn_tf")
class STPN(keras.Model):
    """Sparse Temporal Pooling Network for one stream.

    Args:
        num_classes: number of action classes C.
        attention_units: hidden width of the attention module.
        pooling: "mean" divides the attention-weighted sum by the number of real snippets (the public
            reproduction); "sum" is eq. 1 as written.
        variant: "full" (attention + sparsity), "no_sparsity" (attention, beta = 0) or "no_attention"
            (plain average pooling; attention is 1 everywhere at localization).
        beta: weight of the sparsity loss (ignored unless variant == "full").
        topk_weight: weight of the top-k MIL loss (losses.topk_mil_loss) added to the loss; 0 = eq. 2.

    Call:
        inputs: dict with "features" `[B, T, D]` float32 and optional "mask" `[B, T]` (1 real, 0 padding).

    Returns:
        dict with "attention" `[B, T]`, "tcam" `[B, T, C]` (no classifier bias) and "video_logits" `[B, C]`.
    """

    def __init__(
        self,
        num_classes: int,
        attention_units: int = 256,
        pooling: str = "mean",
        variant: str = "full",
        beta: float = 1e-4,
        topk_weight: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if variant not in VARIANTS:
            raise StpnError(f"unknown model variant {variant!r}; expected one of {VARIANTS}")
        if pooling not in POOLINGS:
            raise StpnError(f"unknown pooling {pooling!r}; expected one of {POOLINGS}")
        self.num_classes = num_classes
        self.attention_units = attention_units
        self.pooling = pooling
        self.variant = variant
        self.beta = beta
        self.topk_weight = float(topk_weight)
        self.attention_module = (
            None if variant == "no_attention" else AttentionModule(attention_units, name="attention")
        )
        self.classifier = ClassifierHead(num_classes, name="classifier")
        self.classification_tracker = keras.metrics.Mean(name="classification_loss")
        self.sparsity_tracker = keras.metrics.Mean(name="sparsity_loss")
        self.total_tracker = keras.metrics.Mean(name="loss")
        self.topk_tracker = keras.metrics.Mean(name="topk_loss") if self.topk_weight > 0 else None

    @property
    def sparsity_weight(self) -> float:
        return self.beta if self.variant == "full" else 0.0

    def build(self, input_shape):
        feature_shape = input_shape["features"] if isinstance(input_shape, dict) else input_shape
        if self.attention_module is not None:
            self.attention_module.build(feature_shape)
        self.classifier.build(tuple(feature_shape[:-2]) + (feature_shape[-1],))
        super().build(input_shape)

    def call(self, inputs, training=False):
        features = inputs["features"]
        mask = inputs.get("mask")
        if mask is None:
            mask = ops.ones(ops.shape(features)[:2], dtype=features.dtype)
        mask = ops.cast(mask, features.dtype)
        if self.attention_module is None:
            attention = ops.ones_like(mask)
        else:
            attention = self.attention_module(features)
        weights = attention * mask
        pooled = ops.sum(features * weights[..., None], axis=1)
        if self.pooling == "mean":
            pooled = pooled / ops.maximum(ops.sum(mask, axis=1, keepdims=True), 1.0)
        return {
            "attention": attention,
            "tcam": self.classifier.tcam(features),
            "video_logits": self.classifier(pooled),
        }

    @property
    def metrics(self):
        extra = [self.topk_tracker] if self.topk_tracker is not None else []
        return [self.classification_tracker, self.sparsity_tracker, self.total_tracker, *extra]

    def _compute_losses(self, inputs, labels, training):
        outputs = self(inputs, training=training)
        cls = losses.classification_loss(labels, outputs["video_logits"])
        sparsity = losses.sparsity_loss(outputs["attention"], inputs.get("mask"))
        total = cls + self.sparsity_weight * sparsity
        if self.topk_tracker is None:
            return cls, sparsity, total, None
        topk = losses.topk_mil_loss(labels, outputs["tcam"] + self.classifier.bias, inputs.get("mask"))
        return cls, sparsity, total + self.topk_weight * topk, topk

    def _update(self, cls, sparsity, total, topk):
        self.classification_tracker.update_state(cls)
        self.sparsity_tracker.update_state(sparsity)
        self.total_tracker.update_state(total)
        if topk is not None:
            self.topk_tracker.update_state(topk)
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        inputs, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            cls, sparsity, total, topk = self._compute_losses(inputs, labels, training=True)
            # Under a multi-replica strategy the replicas' gradients are summed: scale so their sum is the
            # gradient of the global-batch mean (a no-op on one device).
            scaled = total / tf.distribute.get_strategy().num_replicas_in_sync
        grads = tape.gradient(scaled, self.trainable_variables)
        self.optimizer.apply(grads, self.trainable_variables)
        return self._update(cls, sparsity, total, topk)

    def test_step(self, data):
        inputs, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self._update(*self._compute_losses(inputs, labels, training=False))

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "attention_units": self.attention_units,
            "pooling": self.pooling,
            "variant": self.variant,
            "beta": self.beta,
            "topk_weight": self.topk_weight,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def load_stream_model(work, stream: str) -> STPN:
    """The trained STPN of `stream` in a work directory (`artifacts.workdir.WorkDir`), loaded for inference
    (no optimizer state)."""
    path = work.model_path(stream)
    if not os.path.exists(path):
        raise StpnError(f"{path}: no trained {stream} model (run `stpn train --stream={stream}` first)")
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as error:  # noqa: BLE001 - a damaged zip or h5 fails in many ways
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise StpnError(f"{path}: cannot load the trained model ({first}); the file is damaged: "
                        "delete it and train the stream again") from None
