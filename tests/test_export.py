"""Export round trip: reload in a fresh process with plain tf.saved_model.load and compare exactly."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from stpn_tf.data.grid import GridConfig
from stpn_tf.data.records.schema import make_example
from stpn_tf.core.errors import StpnError
from stpn_tf.artifacts.export_dir import read_export_info
from stpn_tf.inference.export import run_export
from stpn_tf.inference.runner import build_module
from tests.helpers.workdir import SMALL_CLASSES, SMALL_D, SMALL_GRID_LENGTH, SMALL_SETTINGS
from tests.helpers.xla import default_xla_env

D, C = SMALL_D, len(SMALL_CLASSES)
CLASSES = SMALL_CLASSES
SETTINGS = SMALL_SETTINGS
GRID = GridConfig(length=SMALL_GRID_LENGTH)

RELOAD = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf
    inputs_path, *pairs = sys.argv[1:]  # then export_dir out_path, for each export
    inputs = np.load(inputs_path)
    for export_dir, out_path in zip(pairs[::2], pairs[1::2]):
        loaded = tf.saved_model.load(export_dir)
        serve = loaded.signatures["serving_default"]
        out = serve(rgb=tf.constant(inputs["rgb"]), flow=tf.constant(inputs["flow"]),
                    num_snippets=tf.constant(inputs["num_snippets"]),
                    seconds_per_snippet=tf.constant(inputs["seconds_per_snippet"]))
        examples = [bytes.fromhex(h) for h in inputs["examples_hex"]]
        ex = loaded.signatures["serve_examples"](examples=tf.constant(examples))
        # Strings as unicode arrays so that np.load needs no pickle.
        as_np = lambda v: v.numpy().astype(str) if v.dtype == tf.string else v.numpy()
        result = {k: as_np(v) for k, v in out.items()}
        result.update({"examples/" + k: as_np(v) for k, v in ex.items()})
        assert not any(name.startswith("stpn_tf") for name in sys.modules), "stpn_tf was imported"
        np.savez(out_path, **result)
""")


@pytest.fixture(scope="module")
def exported(small_workdir, small_export, tmp_path_factory):
    """all_snippets -> (the work directory's export on that grid, the grid): each made once, read by the round
    trip and by saved_model_cli (the grid one is the shared `small_export`)."""
    exports = {False: (small_export, GRID)}
    parent = tmp_path_factory.mktemp("export")
    grid = GridConfig(length=SMALL_GRID_LENGTH, all_snippets=True)
    assert run_export(workdir=small_workdir, out=str(parent / "export"), grid=grid, localizer_config=SETTINGS) == 0
    assert os.listdir(parent) == ["export"]  # no temporaries left
    exports[True] = (str(parent / "export"), grid)
    return exports


@pytest.fixture(scope="module")
def reloaded(exported, tmp_path_factory):
    """all_snippets -> both signatures' outputs on `inputs()` from that export, reloaded with plain
    tf.saved_model.load in one fresh process that never imports stpn_tf."""
    scratch = tmp_path_factory.mktemp("reload")
    data = inputs()
    np.savez(scratch / "inputs.npz", **{k: v for k, v in data.items() if k != "examples"},
             examples_hex=np.array([e.hex() for e in data["examples"]]))
    script = scratch / "reload.py"
    script.write_text(RELOAD)
    pairs = [str(x) for key in exported for x in (exported[key][0], scratch / f"out_{key}.npz")]
    # XLA with its default flags there, the tests' fast-compile flags here (tests/helpers/xla.py): the round
    # trip also shows that those flags change no output bit.
    env = dict(default_xla_env(), TF_CPP_MIN_LOG_LEVEL="2")
    subprocess.run([sys.executable, str(script), str(scratch / "inputs.npz"), *pairs], check=True, cwd=str(scratch),
                   env=env, capture_output=True)
    return {key: np.load(scratch / f"out_{key}.npz") for key in exported}


def inputs():
    rng = np.random.default_rng(0)
    num_snippets = np.array([7, 3, 11], np.int32)
    rgb = rng.normal(0, 1, (3, 11, D)).astype(np.float32)
    flow = rng.normal(0, 1, (3, 11, D)).astype(np.float32)
    for i, n in enumerate(num_snippets):  # padding that must not matter
        rgb[i, n:] = 100.
        flow[i, n:] = -100.
    sps = np.array([.64, .64, 1.6], np.float32)
    examples = [make_example(video_id=f"v{i}", subset="test", rgb=rgb[i, :n], flow=flow[i, :n], labels=[1],
                             duration=float(n * sps[i] - .1), fps=25. if i < 2 else 10., stride_frames=16)
                for i, n in enumerate(num_snippets)]
    return dict(rgb=rgb, flow=flow, num_snippets=num_snippets, seconds_per_snippet=sps,
                examples=np.array(examples, dtype=object))


@pytest.mark.parametrize("all_snippets", [False, True])
def test_export_round_trip_is_exact(small_workdir, exported, reloaded, all_snippets):
    out, grid = exported[all_snippets]
    module = build_module(small_workdir, grid=grid, localizer_config=SETTINGS)
    data = inputs()
    expected = module.serve(tf.constant(data["rgb"]), tf.constant(data["flow"]), tf.constant(data["num_snippets"]),
                            tf.constant(data["seconds_per_snippet"]))
    expected_examples = module.serve_examples(tf.constant(list(data["examples"])))
    got = reloaded[all_snippets]
    as_np = lambda v: v.numpy().astype(str) if v.dtype == tf.string else v.numpy()  # noqa: E731
    assert set(got.files) == set(expected) | {"examples/" + key for key in expected_examples}
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], as_np(value), err_msg=key)
    for key, value in expected_examples.items():
        np.testing.assert_array_equal(got["examples/" + key], as_np(value), err_msg=key)
    # The export derives its bounds in-graph: byte-identical to the eager Localizer (`stpn localize`) on
    # its own raw outputs.
    raw = {key: got[key] for key in ("attention", "tcam", "video_probabilities", "grid_length", "num_snippets")}
    eager = module.localize_stacked(raw, data["seconds_per_snippet"])
    for key, value in eager.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)
    # No host callbacks in the saved graph (a bare TensorFlow client, TF Serving, must run it).
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(out, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    graph = saved.meta_graphs[0].graph_def
    ops = {node.op for node in graph.node} | {node.op for fn in graph.library.function for node in fn.node_def}
    assert not ops & {"PyFunc", "PyFuncStateless", "EagerPyFunc"}
    assert any("_XlaMustCompile" in fn.attr and fn.attr["_XlaMustCompile"].b for fn in graph.library.function)

    # Shapes and contents a client relies on.
    assert list(got["class_names"]) == CLASSES
    t = 11 if all_snippets else 16
    assert got["attention"].shape == (3, 2, t) and got["tcam"].shape == (3, 2, t, C)
    assert got["video_probabilities"].shape == (3, 2, C)
    assert got["detection_segments"].shape == (3, SETTINGS.max_detections, 2)
    np.testing.assert_array_equal(got["grid_length"], data["num_snippets"] if all_snippets else [16] * 3)
    assert got["num_detections"].sum() > 0
    assert list(got["examples/video_id"]) == ["v0", "v1", "v2"]
    # Segments lie inside the videos: features-only input clips at L * seconds_per_snippet, the
    # examples at the recorded duration (L * sps - 0.1 s here).
    limit = data["num_snippets"] * data["seconds_per_snippet"]
    assert np.all(got["detection_segments"].max(axis=(1, 2)) <= limit + 1e-5)
    assert np.all(got["examples/detection_segments"].max(axis=(1, 2)) <= limit - .1 + 1e-5)
    # The examples carry the same features, so detections agree up to the duration clip.
    np.testing.assert_array_equal(got["examples/detection_classes"], got["detection_classes"])
    np.testing.assert_array_equal(got["examples/video_probabilities"], got["video_probabilities"])
    with open(os.path.join(out, "assets", "classes.txt")) as f:
        assert f.read().split() == CLASSES
    info = read_export_info(out)
    assert info.classes == CLASSES and info.feature_dim == D and info.streams == ["rgb", "flow"]
    assert info.grid_length == (None if all_snippets else 16) and info.localize == SETTINGS.to_dict()
    assert info.source == os.path.abspath(small_workdir)


def test_grid_sampling_matches_timeline(small_workdir):
    # With identical rows per snippet index, the attention on the grid is the per-snippet attention
    # gathered at floor(t * L / T) (integer arithmetic: exact).
    from stpn_tf.artifacts.workdir import WorkDir
    from stpn_tf.model.stpn import load_stream_model

    module = build_module(small_workdir, grid=GRID, localizer_config=SETTINGS, jit_compile=False)
    data = inputs()
    out = module.serve(tf.constant(data["rgb"]), tf.constant(data["flow"]), tf.constant(data["num_snippets"]),
                       tf.constant(data["seconds_per_snippet"]))
    model = load_stream_model(WorkDir(small_workdir), "rgb")
    for i, n in enumerate(data["num_snippets"]):
        per_snippet = model({"features": data["rgb"][i:i + 1, :n]}, training=False)["attention"].numpy()[0]
        np.testing.assert_allclose(out["attention"].numpy()[i, 0], per_snippet[(np.arange(16) * int(n)) // 16],
                                   rtol=1e-6)


def test_both_signatures_share_each_localization_function(small_workdir):
    """Features (no durations) and records (with theirs) call the same traced functions: one concrete
    function per slot branch and one for the configured fallback, not one per signature."""
    from stpn_tf.inference.module import InferenceModule
    from stpn_tf.localize.localizer import Localizer

    source = build_module(small_workdir, grid=GRID, localizer_config=SETTINGS, jit_compile=False)
    localizer = Localizer(SETTINGS.replace(max_components_per_class=16), jit_compile=False, share_functions=False)
    module = InferenceModule(source.models, source.class_names, grid=source.grid, localizer=localizer)
    module.serve.get_concrete_function()
    module.serve_examples.get_concrete_function()
    traced = sorted(key[0] for key in localizer._functions._concrete)
    assert traced == ["configured", "rows8", "rowsNone"]  # M = 16: slots 8 and M, then the fallback


def test_saved_model_cli_lists_both_signatures(exported):
    out, _ = exported[False]
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    shown = subprocess.run([cli, "show", "--dir", out, "--all"], check=True, capture_output=True, text=True,
                           env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")).stdout
    assert "signature_def['serving_default']" in shown and "signature_def['serve_examples']" in shown
    for name in ("detection_classes", "detection_scores", "detection_segments", "num_detections",
                 "video_probabilities", "attention", "tcam", "class_names", "num_snippets", "grid_length",
                 "seconds_per_snippet", "video_id", "duration"):
        assert name in shown


def test_export_errors(small_workdir, tmp_path):
    with pytest.raises(StpnError, match="already exists"):
        run_export(workdir=small_workdir, out=str(tmp_path))
    with pytest.raises(StpnError, match="nowhere: no such work directory"):
        run_export(workdir=str(tmp_path / "nowhere"), out=str(tmp_path / "x"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(StpnError, match="classes.json"):
        run_export(workdir=str(tmp_path / "empty"), out=str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()


def test_value_checks_are_exact(small_workdir):
    # The NaN / infinity checks sum the features first: finite values whose sum overflows pass (every
    # element is then tested), and a NaN or infinity anywhere, padding rows included, is refused.
    module = build_module(small_workdir, grid=GRID, localizer_config=SETTINGS, jit_compile=False)
    data = inputs()

    def serve(rgb=data["rgb"], flow=data["flow"]):
        return module.serve(tf.constant(rgb), tf.constant(flow), tf.constant(data["num_snippets"]),
                            tf.constant(data["seconds_per_snippet"]))

    huge = np.full_like(data["rgb"], 3e38)
    assert not np.isfinite(huge.sum(dtype=np.float32))
    serve(rgb=huge)  # finite: accepted
    for value, where, name in ((np.nan, (1, 9, 2), "rgb"), (-np.inf, (0, 0, 0), "flow"), (np.inf, (2, 10, 5), "rgb")):
        bad = {"rgb": data["rgb"].copy(), "flow": data["flow"].copy()}
        bad[name][where] = value  # (1, 9) and (2, 10) lie past num_snippets: padding rows
        with pytest.raises(tf.errors.InvalidArgumentError, match=f"serving_default: {name} holds NaN or infinite"):
            serve(**bad)
