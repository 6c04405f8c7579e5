"""stpn_tf.io, stpn_tf.configs and stpn_tf.core.resources: atomic writes, the work directory's record and lock, the
export description, configs by name and restored from a record, shipped files."""

import json
import os

import ml_collections
import pytest

from stpn_tf import configs
from stpn_tf.core import resources
from stpn_tf.core.errors import StpnError
from stpn_tf.core import atomic
from stpn_tf.artifacts.export_dir import ExportInfo, read_export_info, write_export_info
from stpn_tf.artifacts.results import detections_from_padded, parse_results, results_envelope
from stpn_tf.artifacts.workdir import WorkDir, WorkDirRecord


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "out.json"
    atomic.atomic_write_json(str(path), {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic.atomic_output(str(path)) as temporary:
            with open(temporary, "w") as handle:
                handle.write('{"a": 2, "trunc')
            raise RuntimeError("disk full")
    assert json.loads(path.read_text()) == {"a": 1}  # the previous complete file
    assert os.listdir(tmp_path) == ["out.json"]  # and no temporary
    with pytest.raises(StpnError, match="output directory .* does not exist"):
        atomic.atomic_write_text(str(tmp_path / "missing" / "x.txt"), "x")
    atomic.atomic_write_text(str(tmp_path / "made" / "x.txt"), "x", make_parents=True)
    assert (tmp_path / "made" / "x.txt").read_text() == "x"
    # Temporaries keep the suffix (Keras and numpy look at it) and are hidden.
    name = os.path.basename(atomic.temporary_name(str(tmp_path / "epoch-0001.weights.h5")))
    assert name.startswith(".epoch-0001.weights.h5.tmp-") and name.endswith(".weights.h5")
    assert atomic.is_temporary(name) and not atomic.is_temporary("epoch-0001.weights.h5")


def test_atomic_directory_replaces_only_when_complete(tmp_path):
    out = tmp_path / "export"
    with atomic.atomic_directory(str(out)) as temporary:
        open(os.path.join(temporary, "a"), "w").write("first")
    assert (out / "a").read_text() == "first"
    with pytest.raises(StpnError, match="already exists"):
        with atomic.atomic_directory(str(out)):
            pass
    with pytest.raises(RuntimeError):
        with atomic.atomic_directory(str(out), overwrite=True) as temporary:
            open(os.path.join(temporary, "b"), "w").write("half")
            raise RuntimeError("killed")
    assert sorted(os.listdir(out)) == ["a"] and sorted(os.listdir(tmp_path)) == ["export"]
    with atomic.atomic_directory(str(out), overwrite=True) as temporary:
        open(os.path.join(temporary, "b"), "w").write("second")
    assert sorted(os.listdir(out)) == ["b"] and sorted(os.listdir(tmp_path)) == ["export"]


def test_workdir_record_round_trip_and_errors(tmp_path):
    work = WorkDir(str(tmp_path / "w"))
    with pytest.raises(StpnError, match="w: no such work directory"):
        work.require()
    os.makedirs(work.path)
    with pytest.raises(StpnError, match="classes.json: missing"):
        work.require()
    assert work.read_record() is None
    record = WorkDirRecord(dataset_dir="/data/th14", classes=["a", "b"], feature_dim=8,
                           config={"train": {"steps": 3}}, config_name="demo")
    work.write_record(record)
    work.write_classes(["a", "b"])
    assert work.require().read_record() == record and work.classes() == ["a", "b"]
    (tmp_path / "w" / "workdir.json").write_text("{broken")
    with pytest.raises(StpnError, match="workdir.json: malformed work directory record"):
        work.read_record()
    with pytest.raises(StpnError, match="unknown stream 'depth'"):
        work.model_path("depth")


def test_workdir_records_inside_paths_relative_to_it(tmp_path):
    """A dataset inside the work directory is recorded relative to it (the directory can move); one elsewhere
    stays absolute; records written with absolute paths (before this) still load."""
    work = WorkDir(str(tmp_path / "w"))
    inside = str(tmp_path / "w" / "dataset")
    work.write_record(WorkDirRecord(dataset_dir=inside, classes=["a"], feature_dim=8,
                                    config={"dataset": {"dir": inside}, "train": {"steps": 3}}, config_name="demo"))
    data = json.loads((tmp_path / "w" / "workdir.json").read_text())
    assert data["dataset_dir"] == "./dataset" and data["config"]["dataset"]["dir"] == "./dataset"
    os.rename(tmp_path / "w", tmp_path / "moved")
    record = WorkDir(str(tmp_path / "moved")).read_record()
    assert record.dataset_dir == str(tmp_path / "moved" / "dataset") == record.config["dataset"]["dir"]
    work.write_config("demo", {"dataset": {"dir": inside}})
    assert json.loads((tmp_path / "w" / "config.demo.json").read_text())["dataset"]["dir"] == "./dataset"
    # Elsewhere, and older records: as written.
    for path in ("/data/th14", str(tmp_path / "w2" / "dataset")):
        work.write_record(WorkDirRecord(dataset_dir=path, classes=["a"], feature_dim=8,
                                        config={"dataset": {"dir": path}}, config_name=""))
        assert WorkDir(str(tmp_path / "w")).read_record().dataset_dir == path
    data["dataset_dir"] = data["config"]["dataset"]["dir"] = "/old/absolute/dataset"
    (tmp_path / "w" / "workdir.json").write_text(json.dumps(data))
    assert work.read_record().dataset_dir == "/old/absolute/dataset"


def test_workdir_lock_refuses_a_second_run(tmp_path):
    work = WorkDir(str(tmp_path))
    with work.lock("rgb"):
        with pytest.raises(StpnError, match=f"the rgb stream is being trained by process {os.getpid()}"):
            with work.lock("rgb"):
                pass
        with work.lock("flow"):  # another stream is another lock
            pass
    with work.lock("rgb"):  # released on exit
        pass


def test_export_info_round_trip(tmp_path):
    with pytest.raises(StpnError, match="no such export directory"):
        read_export_info(str(tmp_path / "none"))
    with pytest.raises(StpnError, match="not an export directory"):
        read_export_info(str(tmp_path))
    (tmp_path / "saved_model.pb").write_bytes(b"")
    with pytest.raises(StpnError, match="stpn_export.json: missing"):
        read_export_info(str(tmp_path))
    info = ExportInfo(classes=["a"], feature_dim=4, streams=["rgb", "flow"], grid_length=None, localize={"alpha": .5},
                      source="/w")
    write_export_info(str(tmp_path), info)
    assert read_export_info(str(tmp_path)) == info


def test_results_from_padded_outputs():
    import numpy as np

    outputs = {"detection_classes": np.array([[1, 0, -1], [-1, -1, -1]]),
               "detection_scores": np.array([[.9, .5, 0.], [0., 0., 0.]], np.float32),
               "detection_segments": np.array([[[1., 2.], [0., 4.], [0., 0.]], [[0., 0.]] * 3], np.float32),
               "num_detections": np.array([2, 0])}
    assert detections_from_padded(outputs, ["a", "b"], 0) == [
        {"label": "b", "score": pytest.approx(.9), "segment": [1.0, 2.0]},
        {"label": "a", "score": .5, "segment": [0.0, 4.0]}]
    assert detections_from_padded(outputs, ["a", "b"], 1) == []
    envelope = results_envelope({"v2": [], "v1": []}, sort=True)
    assert list(envelope["results"]) == ["v1", "v2"] and envelope["version"] == "VERSION 1.3"
    assert parse_results(json.dumps(envelope), "x.json") == envelope
    with pytest.raises(StpnError, match="x.json: missing 'results'"):
        parse_results("{}", "x.json")


def test_configs_by_name_file_and_record(tmp_path):
    demo = configs.load_config("demo")
    assert demo.synthetic.feature_dim == 32 and demo.train.steps == 8000
    assert set(configs.flat_keys(demo)) == set(configs.flat_keys(configs.load_config("thumos14")))
    with pytest.raises(StpnError, match="thumos15: config file not found; shipped configs: thumos14, demo"):
        configs.load_config("thumos15")
    mine = tmp_path / "mine.py"
    mine.write_text("from stpn_tf.configs import thumos14\n\ndef get_config():\n"
                    "    c = thumos14.get_config()\n    c.train.steps = 5\n    return c\n")
    assert configs.load_config(str(mine)).train.steps == 5
    (tmp_path / "bad.py").write_text("raise ValueError('oops')\n")
    with pytest.raises(StpnError, match="bad.py: the config file failed to load \\(ValueError: oops\\)"):
        configs.load_config(str(tmp_path / "bad.py"))
    # A config recorded as JSON comes back typed: tuples stay tuples, floats floats; unknown keys drop out.
    recorded = json.loads(demo.to_json())
    recorded["sweep"]["class_thresholds"] = [0.5, 1]
    recorded["train"]["learning_rate"] = 1
    recorded["gone"] = {"x": 1}
    restored = configs.restore_config(recorded, "demo")
    assert isinstance(restored, ml_collections.ConfigDict)
    assert restored.sweep.class_thresholds == (0.5, 1.0) and isinstance(restored.train.learning_rate, float)
    assert "gone" not in restored and restored.synthetic.feature_dim == 32
    # The config it came from may be gone: thumos14 gives the structure.
    assert configs.restore_config(recorded, str(tmp_path / "deleted.py")).train.steps == 8000


def test_shipped_resources():
    toolkit = resources.resolve("stpn:thumos14/th14_evalkit_groundtruth")
    assert os.path.isfile(os.path.join(toolkit, "det.txt"))
    assert resources.resolve("/some/path") == "/some/path" and resources.resolve(None) is None
    assert "thumos14/thumos14reduced" in resources.shipped()
    with pytest.raises(StpnError, match="stpn:thumos14/nope: no such file shipped"):
        resources.resolve("stpn:thumos14/nope")
