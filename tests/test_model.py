"""STPN model: hand-checkable forward pass, losses, eager vs XLA train step, serialization."""

import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from stpn_tf.core.errors import StpnError
from stpn_tf.model import losses
from stpn_tf.model.stpn import STPN

X = np.array([[[1.0, 2.0], [3.0, 4.0]]], np.float32)  # [B=1, T=2, D=2]


def _set_classifier(model, kernel, bias):
    model.classifier.kernel.assign(np.asarray(kernel, np.float32))
    model.classifier.bias.assign(np.asarray(bias, np.float32))


def _build(model, t=2, d=2):
    model({"features": tf.zeros([1, t, d])})
    return model


def test_no_attention_forward_by_hand():
    m = _build(STPN(1, variant="no_attention"))
    _set_classifier(m, [[1.0], [1.0]], [0.5])
    out = m({"features": X})
    # T-CAM without bias: 1+2 = 3, 3+4 = 7.
    np.testing.assert_allclose(out["tcam"].numpy()[0, :, 0], [3.0, 7.0])
    np.testing.assert_allclose(out["attention"].numpy(), [[1.0, 1.0]])
    # Mean pooling: x_bar = ([1,2] + [3,4]) / 2 = [2, 3] -> 2 + 3 + 0.5 = 5.5.
    np.testing.assert_allclose(out["video_logits"].numpy(), [[5.5]])
    # The padded second snippet must not count: x_bar = [1, 2] -> 3.5.
    masked = m({"features": X, "mask": np.array([[1.0, 0.0]], np.float32)})
    np.testing.assert_allclose(masked["video_logits"].numpy(), [[3.5]])


def test_attention_weighted_pooling_by_hand():
    m = _build(STPN(1, attention_units=1, pooling="sum"))
    # hidden = relu(x_0 - 1), score = hidden: lambda = sigmoid(x_0 - 1) = [sigmoid(0), sigmoid(2)].
    m.attention_module.hidden.kernel.assign([[1.0], [0.0]])
    m.attention_module.hidden.bias.assign([-1.0])
    m.attention_module.score.kernel.assign([[1.0]])
    m.attention_module.score.bias.assign([0.0])
    _set_classifier(m, [[1.0], [0.0]], [0.0])
    out = m({"features": X})
    lam = np.array([0.5, 1 / (1 + math.exp(-2))])
    np.testing.assert_allclose(out["attention"].numpy()[0], lam, rtol=1e-6)
    # Sum pooling, classifier reads dimension 0: 0.5 * 1 + 0.8808 * 3.
    np.testing.assert_allclose(out["video_logits"].numpy()[0, 0], lam[0] * 1 + lam[1] * 3, rtol=1e-6)
    mean = _build(STPN(1, attention_units=1, pooling="mean"))
    mean.set_weights(m.get_weights())
    np.testing.assert_allclose(mean({"features": X})["video_logits"].numpy()[0, 0], (lam[0] + 3 * lam[1]) / 2,
                               rtol=1e-6)


def test_losses_by_hand():
    # Logit 0 gives -log(1/2) = ln 2 whatever the label; logit 2 with label 1 gives log(1 + e^-2).
    labels = np.array([[1.0, 0.0]], np.float32)
    logits = np.array([[0.0, 0.0]], np.float32)
    np.testing.assert_allclose(losses.classification_loss(labels, logits).numpy(), math.log(2), rtol=1e-6)
    np.testing.assert_allclose(
        losses.classification_loss(np.array([[1.0]]), np.array([[2.0]], np.float32)).numpy(),
        math.log1p(math.exp(-2)), rtol=1e-6)
    # Large logits stay finite (the stable form).
    assert np.isfinite(losses.classification_loss(np.array([[0.0]]), np.array([[500.0]], np.float32)).numpy())
    att = np.array([[0.5, 0.25, 1.0], [0.0, 0.0, 1.0]], np.float32)
    # L1 per video: 1.75 and 1.0 -> mean 1.375; masking the last snippet: 0.75 and 0 -> 0.375.
    np.testing.assert_allclose(losses.sparsity_loss(att).numpy(), 1.375)
    np.testing.assert_allclose(losses.sparsity_loss(att, np.array([[1, 1, 0], [1, 1, 0]], np.float32)).numpy(), 0.375)


@pytest.mark.parametrize("variant,weight", [("full", 0.5), ("no_sparsity", 0.0), ("no_attention", 0.0)])
def test_total_loss_uses_beta_only_for_full(variant, weight):
    m = _build(STPN(3, variant=variant, beta=0.5), t=4, d=5)
    x = np.random.default_rng(0).standard_normal((2, 4, 5)).astype(np.float32)
    y = np.array([[1, 0, 0], [0, 1, 1]], np.float32)
    m.compile(optimizer=keras.optimizers.SGD(0.0))
    logs = m.test_on_batch({"features": x, "mask": np.ones((2, 4), np.float32)}, y, return_dict=True)
    np.testing.assert_allclose(logs["loss"], logs["classification_loss"] + weight * logs["sparsity_loss"], rtol=1e-5)


def test_train_step_eager_equals_xla():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 16, 8)).astype(np.float32)
    y = (rng.random((6, 4)) > 0.5).astype(np.float32)
    batch = ({"features": x, "mask": np.ones((6, 16), np.float32)}, y)
    models = []
    for jit in (False, True):
        keras.utils.set_random_seed(3)
        m = _build(STPN(4, attention_units=8), t=16, d=8)
        m.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=jit)
        assert m.jit_compile == jit
        for _ in range(3):
            logs = m.train_on_batch(*batch, return_dict=True)
        models.append((m, logs))
    (eager, logs_e), (xla, logs_x) = models
    for a, b in zip(eager.get_weights(), xla.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(logs_e["loss"], logs_x["loss"], rtol=1e-5)


def test_training_reduces_loss_on_separable_data():
    rng = np.random.default_rng(2)
    y = np.eye(2, dtype=np.float32)[rng.integers(0, 2, 32)]
    x = rng.normal(0, 0.1, (32, 10, 4)).astype(np.float32)
    x[:, 3:6, :2] += 2.0 * y[:, None, :]  # class evidence in three snippets only
    m = _build(STPN(2, attention_units=8), t=10, d=4)
    m.compile(optimizer=keras.optimizers.Adam(5e-2))
    first = m.evaluate({"features": x}, y, verbose=0, return_dict=True)["classification_loss"]
    m.fit({"features": x}, y, epochs=30, batch_size=8, verbose=0)
    last = m.evaluate({"features": x}, y, verbose=0, return_dict=True)["classification_loss"]
    assert last < 0.5 * first


def test_config_round_trip_and_keras_file(tmp_path):
    m = _build(STPN(5, attention_units=7, pooling="sum", variant="no_sparsity", beta=0.25), t=3, d=6)
    cfg = m.get_config()
    assert {k: cfg[k] for k in ("num_classes", "attention_units", "pooling", "variant", "beta")} == {
        "num_classes": 5, "attention_units": 7, "pooling": "sum", "variant": "no_sparsity", "beta": 0.25}
    clone = STPN.from_config(cfg)
    assert clone.get_config() == cfg
    path = os.path.join(tmp_path, "m.keras")
    m.save(path)
    loaded = keras.models.load_model(path)
    x = np.random.default_rng(4).standard_normal((2, 3, 6)).astype(np.float32)
    for key, value in m({"features": x}).items():
        np.testing.assert_array_equal(loaded({"features": x})[key].numpy(), value.numpy())


def test_bad_arguments():
    with pytest.raises(StpnError, match="variant"):
        STPN(3, variant="nope")
    with pytest.raises(StpnError, match="pooling"):
        STPN(3, pooling="max")


def test_topk_mil_loss_by_hand_and_against_numpy():
    from stpn_tf.model.losses import topk_mil_loss

    # n = 3 real snippets -> k = ceil(3 / 8) = 1: scores = the max per class = [3, 4] (the padded snippet's
    # 100s are ignored); label class 0 -> -log softmax(3; 3, 4) = log(1 + e).
    logits = np.array([[[1., 0.], [3., 0.], [2., 4.], [100., 100.]]], np.float32)
    mask = np.array([[1, 1, 1, 0]], np.float32)
    got = float(topk_mil_loss(np.array([[1., 0.]]), logits, mask))
    np.testing.assert_allclose(got, np.log1p(np.e), rtol=1e-6)
    # Both labels: targets .5 / .5 -> .5 * (log(1 + e) + log(1 + 1 / e)).
    got = float(topk_mil_loss(np.array([[1., 1.]]), logits, mask))
    np.testing.assert_allclose(got, .5 * (np.log1p(np.e) + np.log1p(1 / np.e)), rtol=1e-6)

    rng = np.random.default_rng(0)
    b, t, c = 5, 30, 4
    logits = rng.normal(0, 2, (b, t, c)).astype(np.float32)
    lengths = np.array([30, 9, 8, 17, 1])
    mask = (np.arange(t)[None] < lengths[:, None]).astype(np.float32)
    labels = (rng.uniform(size=(b, c)) < .4).astype(np.float32)
    labels[0] = 0  # a video without labels contributes 0
    expected = []
    for i in range(b):
        k = int(np.ceil(lengths[i] / 8))
        scores = np.sort(logits[i, :lengths[i]].astype(np.float64), axis=0)[::-1][:k].mean(axis=0)
        target = labels[i] / max(labels[i].sum(), 1)
        expected.append(-(target * (scores - np.log(np.exp(scores).sum()))).sum())
    np.testing.assert_allclose(float(topk_mil_loss(labels, logits, mask)), np.mean(expected), rtol=1e-5)


def test_topk_weight_adds_the_loss_and_round_trips():
    from stpn_tf.model.stpn import STPN, ModelConfig

    with pytest.raises(StpnError, match="topk_weight"):
        ModelConfig(topk_weight=-1.)
    model = ModelConfig(attention_units=4, topk_weight=.5).build(3)
    inputs = {"features": np.random.default_rng(0).normal(size=(2, 10, 6)).astype(np.float32),
              "mask": np.ones((2, 10), np.float32)}
    labels = np.array([[1, 0, 0], [0, 1, 1]], np.float32)
    cls, sparsity, total, topk = model._compute_losses(inputs, labels, training=False)
    np.testing.assert_allclose(float(total), float(cls) + 1e-4 * float(sparsity) + .5 * float(topk), rtol=1e-6)
    assert "topk_loss" in [m.name for m in model.metrics]
    assert STPN.from_config(model.get_config()).topk_weight == .5
    plain = ModelConfig(attention_units=4).build(3)
    plain(inputs)
    assert plain._compute_losses(inputs, labels, training=False)[3] is None
