"""The public Python API (`stpn_tf.load`, `Model.localize`, `stpn_tf.evaluate`): the README's example runs
as written on a tiny work directory, a work directory localizes with its recorded settings, and
`import stpn_tf` does not import TensorFlow."""

import contextlib
import io
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import stpn_tf
from stpn_tf.artifacts.workdir import WorkDir, WorkDirRecord
from tests.helpers.workdir import write_random_workdir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ["BaseballPitch", "BasketballDunk", "Billiards"]
# The recorded localization: a 16-position grid, small bounds, and a class threshold other than the paper's
# 0.1, so a loader that fell back to the default LocalizerConfig would show.
RECORDED = {"num_snippets": 16, "all_snippets": False, "interpolation": 4, "max_detections": 64,
            "max_components_per_class": 16, "class_threshold": 0.05, "batch_size": 4}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A work directory like the demo's: random-weight models (D = 8), a record with the localization
    settings, and dataset/ground_truth.json with the README's video."""
    path = str(tmp_path_factory.mktemp("api") / "demo")
    write_random_workdir(path, CLASSES, feature_dim=8)
    WorkDir(path).write_record(WorkDirRecord(dataset_dir=os.path.join(path, "dataset"), classes=CLASSES,
                                             feature_dim=8, config={"localize": RECORDED}, config_name="demo"))
    os.makedirs(os.path.join(path, "dataset"))
    truth = {"database": {"video_test_0000004": {"subset": "test", "duration": 76.8, "annotations": [
        {"segment": [10.0, 20.0], "label": "BaseballPitch"}, {"segment": [40.0, 45.0], "label": "Billiards"}]}}}
    with open(os.path.join(path, "dataset", "ground_truth.json"), "w") as f:
        json.dump(truth, f)
    return path


def _readme_example() -> str:
    text = open(os.path.join(REPO, "README.md")).read()
    section = text[text.index("### Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_runs(workdir):
    code = _readme_example().replace('"work/demo', f'"{workdir}')
    assert workdir in code  # the example reads the work directory it names
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md (Python API)", "exec"), {})
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("['BaseballPitch', 'BasketballDunk', 'Billiards'] 8 0.05")
    assert lines[-1].startswith("average mAP ")


def test_workdir_localizes_with_its_recorded_settings(workdir):
    model = stpn_tf.load(workdir)
    assert model.localizer_config.class_threshold == 0.05 and model.localizer_config.max_detections == 64
    rng = np.random.default_rng(1)
    videos = {f"v{i}": {"rgb": rng.normal(size=(t, 8)), "flow": rng.normal(size=(t, 8))}
              for i, t in enumerate((30, 7))}
    results = model.localize(videos, seconds_per_snippet=0.64)["results"]
    assert set(results) == {"v0", "v1"}
    for video, t in (("v0", 30), ("v1", 7)):
        for d in results[video]:
            assert d["label"] in CLASSES and 0 <= d["segment"][0] < d["segment"][1] <= t * 0.64 + 1e-6
    # Other settings on request.
    other = stpn_tf.load(workdir, localizer_config=model.localizer_config.replace(class_threshold=0.5))
    assert other.localizer_config.class_threshold == 0.5
    with pytest.raises(stpn_tf.StpnError, match="video 'bad': rgb features have shape \\[5, 3\\]"):
        model.localize({"bad": {"rgb": np.zeros((5, 3)), "flow": np.zeros((5, 3))}}, seconds_per_snippet=1.0)
    with pytest.raises(stpn_tf.StpnError, match="video 'half' has no flow features"):
        model.localize({"half": {"rgb": np.zeros((5, 8))}}, seconds_per_snippet=1.0)


def test_an_export_gives_the_work_directorys_detections(workdir, tmp_path):
    from stpn_tf.inference.export import run_export
    from stpn_tf.workflows.api import recorded_settings

    grid, settings = recorded_settings(workdir)
    export = str(tmp_path / "export")
    with contextlib.redirect_stdout(io.StringIO()):
        run_export(workdir=workdir, out=export, grid=grid, localizer_config=settings)
    from_export, from_workdir = stpn_tf.load(export), stpn_tf.load(workdir)
    assert from_export.localizer_config == from_workdir.localizer_config
    rng = np.random.default_rng(2)
    videos = {"v": {"rgb": rng.normal(size=(20, 8)), "flow": rng.normal(size=(20, 8))}}
    assert (from_export.localize(videos, seconds_per_snippet=0.64)
            == from_workdir.localize(videos, seconds_per_snippet=0.64))
    with pytest.raises(stpn_tf.StpnError, match="compiled into it; export again"):
        stpn_tf.load(export, localizer_config=settings)


def test_evaluate_by_hand():
    from stpn_tf.artifacts.annotations import Segment, make_record

    truth = [make_record("v", "test", 100.0, [Segment(10.0, 20.0, "A"), Segment(50.0, 60.0, "A")])]
    # One exact hit ranked first, then one miss: precision 1, 1/2 at recall 1/2 -> AP 0.5 at every tIoU.
    detections = {"results": {"v": [{"label": "A", "score": 0.9, "segment": [10.0, 20.0]},
                                    {"label": "A", "score": 0.5, "segment": [80.0, 90.0]}]}}
    result = stpn_tf.evaluate(detections, truth, tiou_thresholds=[0.5, 0.7])
    assert result["mAP"] == [0.5, 0.5] and result["average_mAP"] == 0.5


def test_import_stays_light():
    code = "import sys, stpn_tf; stpn_tf.evaluate; print(sorted(stpn_tf.__all__)); print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert out.splitlines()[-1] == "False"
    assert "load" in out and "evaluate" in out
