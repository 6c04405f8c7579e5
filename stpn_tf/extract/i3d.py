"""Loading a frozen Kinetics I3D feature extractor through `tensorflow_hub.load`.

A model is given as a TF Hub handle (URL) or a local SavedModel directory; `hub.load` accepts both,
and with `TFHUB_CACHE_DIR` pointing at a pre-filled cache a handle resolves without network.

Two kinds of model fit (details and handles in docs/extract.md):
  * A SavedModel whose signature maps a float32 stack batch [B, F, 224, 224, C] (C = 3 RGB, 2 flow)
    to the 1024-d average-pooled pre-logit features, either [B, 1024] or an unpooled feature map
    [B, T', H', W', 1024] / [B, T', 1024] that is averaged here.
  * The TF Hub "deepmind/i3d-kinetics-400" / "-600" RGB modules (TF1 Hub format, signature "default",
    input [B, F, 224, 224, 3] RGB in [0, 1], output 400 / 600 logits). Their logits are not the
    features; `feature_tensor` names the graph tensor of the last Inception block (Mixed_5c) and the
    signature is pruned to return it, which is then average-pooled to [B, 1024].
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from absl import logging

from stpn_tf.core.errors import StpnError

# Output widths of Kinetics classifiers: a model returning these gives logits, not features.
_LOGIT_WIDTHS = (400, 600, 700)

# Settings for known public handles (matched by substring of the handle).
# The TF Hub / Kaggle RGB I3D modules: [0, 1] input, logits output, features read at Mixed_5c.
_HUB_RGB_I3D: dict[str, Any] = {"input_range": (0.0, 1.0), "feature_tensor": "RGB/inception_i3d/Mixed_5c/concat:0"}
KNOWN_MODELS: dict[str, dict[str, Any]] = {
    handle: _HUB_RGB_I3D
    for handle in ("deepmind/i3d-kinetics-400", "deepmind/i3d-kinetics-600",
                   "i3d-kinetics/tensorFlow1/400", "i3d-kinetics/tensorFlow1/600")
}


def known_model_settings(handle: str) -> dict[str, Any]:
    """Returns the preset for a known public handle (case-insensitive substring match), or {}."""
    lowered = handle.lower()
    for key, settings in KNOWN_MODELS.items():
        if key.lower() in lowered:
            return dict(settings)
    return {}


def _load(handle: str) -> Any:
    with warnings.catch_warnings():  # tensorflow_hub's own import of pkg_resources warns on every run
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        import tensorflow_hub as hub  # imported lazily: only extraction needs it

    try:
        return hub.load(handle)
    except Exception as error:  # hub raises OSError, ValueError, URLError, ... depending on source
        raise StpnError(
            f"{handle}: cannot load the I3D model ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}); for offline use pass a local "
            "SavedModel directory or pre-fill TFHUB_CACHE_DIR (docs/extract.md)") from None


class FeatureModel:
    """A frozen per-stream I3D: stacks of frames in [-1, 1] -> one feature vector per stack.

    Args:
        handle: TF Hub handle or local SavedModel directory.
        channels: 3 for RGB, 2 for flow; checked against the input.
        signature: Signature name; default "default", then "serving_default", then the only one.
        output_key: Output of the signature holding the features; default "features" when present,
            else the only output, else "default".
        feature_tensor: Graph tensor to return instead of the signature output (TF1 Hub format
            models only, e.g. the Kinetics logits modules; see module docstring).
        input_range: Value range the model expects; stacks arrive in [-1, 1] and are mapped
            linearly to it. None uses the known-handle preset, else (-1, 1).
    """

    def __init__(self, handle: str, *, channels: int, signature: str | None = None,
                 output_key: str | None = None, feature_tensor: str | None = None,
                 input_range: Sequence[float] | None = None):
        preset = known_model_settings(handle)
        self.handle = handle
        self.channels = channels
        self.feature_tensor = feature_tensor if feature_tensor is not None else preset.get("feature_tensor")
        low, high = input_range if input_range is not None else preset.get("input_range", (-1.0, 1.0))
        self.input_range = (float(low), float(high))
        self._loaded = _load(handle)  # kept alive: the functions below reference its variables
        self._function, self._input_name = self._select_function(signature)
        self._output_key = output_key
        if tf.config.list_physical_devices("GPU"):
            logging.info("I3D %s runs on GPU", handle)

    def _select_function(self, signature: str | None):
        signatures = getattr(self._loaded, "signatures", None) or {}
        if signatures:
            if signature is None:
                for candidate in ("default", "serving_default"):
                    if candidate in signatures:
                        signature = candidate
                        break
                else:
                    if len(signatures) != 1:
                        raise StpnError(f"{self.handle}: several signatures {sorted(signatures)}; "
                                        "choose one with signature=")
                    signature = next(iter(signatures))
            if signature not in signatures:
                raise StpnError(f"{self.handle}: no signature {signature!r} (has {sorted(signatures)})")
            function = signatures[signature]
        elif signature is None and callable(self._loaded):
            function = self._loaded
        else:
            raise StpnError(f"{self.handle}: the SavedModel has no signatures to call")

        if self.feature_tensor is not None:
            if not hasattr(function, "prune"):
                raise StpnError(f"{self.handle}: feature_tensor needs a TF1 Hub format model; this "
                                "SavedModel's signature cannot be pruned")
            try:
                fetch = function.graph.get_tensor_by_name(self.feature_tensor)
            except (KeyError, ValueError):
                raise StpnError(f"{self.handle}: graph has no tensor {self.feature_tensor!r}; list "
                                "candidates with stpn_tf.extract.i3d.list_tensors") from None
            feed = function.inputs[0]
            function = function.prune(feeds=[feed], fetches=[fetch])
            return function, None

        input_name = None
        structured = getattr(function, "structured_input_signature", None)
        if structured is not None:
            args, kwargs = structured
            if not args and len(kwargs) == 1:
                input_name = next(iter(kwargs))
            elif not args and len(kwargs) > 1:
                raise StpnError(f"{self.handle}: signature takes several inputs {sorted(kwargs)}; "
                                "an I3D stream takes one video tensor")
        return function, input_name

    def __call__(self, stacks: np.ndarray) -> np.ndarray:
        """Features of a batch of stacks.

        Args:
            stacks: float32 [B, F, 224, 224, C] in [-1, 1].

        Returns:
            float32 [B, D] (D = 1024 for I3D).
        """
        if stacks.ndim != 5 or stacks.shape[-1] != self.channels:
            raise StpnError(f"{self.handle}: expected stacks [B, F, H, W, {self.channels}], "
                            f"got {list(stacks.shape)}")
        low, high = self.input_range
        inputs = (stacks + 1.0) * ((high - low) / 2.0) + low
        inputs = tf.constant(inputs, dtype=tf.float32)
        if self._input_name is not None:
            outputs = self._function(**{self._input_name: inputs})
        else:
            outputs = self._function(inputs)
        features = self._pick_output(outputs)
        features = np.asarray(features, dtype=np.float32)
        if features.ndim > 2:
            # An unpooled feature map [B, T', (H', W',) D]: average over time and space, which is
            # what I3D's own average pooling before the classifier computes on a 16-frame stack.
            features = features.reshape(features.shape[0], -1, features.shape[-1]).mean(axis=1)
        if features.ndim != 2 or features.shape[0] != stacks.shape[0]:
            raise StpnError(f"{self.handle}: model output of shape {list(features.shape)} is not "
                            "one feature vector per stack")
        if self.feature_tensor is None and features.shape[1] in _LOGIT_WIDTHS:
            raise StpnError(f"{self.handle}: the model returns {features.shape[1]} values per stack, "
                            "which are Kinetics class logits, not the 1024-d features; pass "
                            "feature_tensor (docs/extract.md)")
        return features

    def _pick_output(self, outputs: Any) -> Any:
        if isinstance(outputs, (list, tuple)):
            if len(outputs) != 1:
                raise StpnError(f"{self.handle}: expected one output, got {len(outputs)}")
            return outputs[0]
        if isinstance(outputs, dict):
            key = self._output_key
            if key is None:
                if "features" in outputs:
                    key = "features"
                elif len(outputs) == 1:
                    key = next(iter(outputs))
                else:
                    key = "default"
            if key not in outputs:
                raise StpnError(f"{self.handle}: no output {key!r} (has {sorted(outputs)})")
            return outputs[key]
        return outputs


def list_tensors(handle: str, contains: str = "Mixed_5c", signature: str = "default") -> list[str]:
    """Names of graph tensors of a TF1 Hub format model whose name contains `contains`.

    Helps find `feature_tensor` for a model whose graph names differ from the presets.
    """
    loaded = _load(handle)
    function = loaded.signatures[signature]
    names = []
    for op in function.graph.get_operations():
        for tensor in op.outputs:
            if contains in tensor.name:
                names.append(f"{tensor.name} {tensor.shape}")
    return names
