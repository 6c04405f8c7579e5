"""The installable package: the wheel holds the configs and the shipped annotations, and an installed copy
(not the source tree) finds them from any directory."""

import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    # Built from a copy, so that the build's by-products stay out of the source tree.
    source = tmp_path_factory.mktemp("source")
    for name in ("stpn_tf", "configs", "data", "pyproject.toml", "README.md"):
        copy = shutil.copytree if os.path.isdir(os.path.join(REPO, name)) else shutil.copy
        copy(os.path.join(REPO, name), source / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(out), str(source)], check=True, capture_output=True, text=True, timeout=300)
    (path,) = out.glob("stpn_tf-*.whl")
    return path


def test_wheel_holds_configs_and_annotations(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for config in ("thumos14", "demo", "activitynet13"):
        assert f"stpn_tf/configs/{config}.py" in names
    shipped = ("thumos14/README.md", "thumos14/th14_evalkit_groundtruth/det.txt",
               "thumos14/th14_evalkit_groundtruth/Ambiguous_test.txt", "thumos14/thumos14reduced/videoname.npy",
               "thumos14/thumos14reduced/duration.npy", "thumos14/basnet/gt.json", "thumos14/basnet/split_test.txt")
    for name in shipped:
        assert f"stpn_tf/shipped/{name}" in names, name
    assert len([n for n in names if n.startswith("stpn_tf/shipped/thumos14/th14_evalkit_groundtruth/")]) == 44
    assert "stpn_tf/shipped/kinetics400/label_map.txt" in names
    assert not [n for n in names if n.startswith(("tests/", "bench/", "docs/", "configs/", "data/"))]
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "stpn = stpn_tf.cli:run" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_installed_copy_runs_from_another_directory(wheel, tmp_path):
    target, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
                    str(wheel)], check=True, capture_output=True, text=True, timeout=300)
    env = dict(os.environ, PYTHONPATH=str(target))  # the installed copy comes before the editable one
    probe = ("import json, stpn_tf, stpn_tf.configs as c, stpn_tf.core.resources as r;"
             "print(json.dumps([stpn_tf.__file__, c.load_config('demo').train.steps, "
             "r.resource_path('thumos14/basnet/gt.json')]))")
    found = json.loads(subprocess.run([sys.executable, "-c", probe], cwd=elsewhere, env=env, check=True,
                                      capture_output=True, text=True, timeout=120).stdout)
    assert found[0].startswith(str(target)) and found[1] == 8000 and found[2].startswith(str(target))
    # The command evaluates against the shipped toolkit ground truth, named with stpn: (no source tree).
    predictions = elsewhere / "p.json"
    predictions.write_text(json.dumps({"results": {"video_test_0000004": [
        {"label": "CricketBowling", "score": 1.0, "segment": [0.0, 5.0]}]}}))
    proc = subprocess.run([sys.executable, "-m", "stpn_tf.cli", "evaluate",
                           "--ground_truth=stpn:thumos14/th14_evalkit_groundtruth", f"--predictions={predictions}",
                           "--protocol=th14kit", "--tiou_thresholds=0.5"],
                          cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "212 videos" in proc.stdout or "213 videos" in proc.stdout
    assert stpn_help(env, elsewhere).startswith("stpn demo: ")


def stpn_help(env, cwd) -> str:
    return subprocess.run([sys.executable, "-m", "stpn_tf.cli", "demo", "--help"], cwd=cwd, env=env, check=True,
                          capture_output=True, text=True, timeout=60).stdout


def test_repository_top_level_is_the_stated_layout():
    """configs/ and data/ sit at the root (the project's stated layout), beside stpn_tf/ and tests/."""
    for name in ("stpn_tf", "configs", "data", "tests", "pyproject.toml", "README.md"):
        assert os.path.exists(os.path.join(REPO, name)), name
    assert not os.path.exists(os.path.join(REPO, "stpn_tf", "configs"))
    assert not os.path.exists(os.path.join(REPO, "stpn_tf", "shipped"))
    assert os.path.isfile(os.path.join(REPO, "configs", "thumos14.py"))
    assert os.path.isdir(os.path.join(REPO, "data", "thumos14", "th14_evalkit_groundtruth"))


def test_pyproject_lists_every_package_folder():
    """Packages are listed by hand (discovery cannot see the mapped configs/ and data/): none missing, and
    their data is in the wheel (test_wheel_holds_configs_and_annotations)."""
    import tomllib

    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        tool = tomllib.load(f)["tool"]["setuptools"]
    folders = {os.path.relpath(root, REPO).replace(os.sep, ".")
               for root, _, files in os.walk(os.path.join(REPO, "stpn_tf")) if "__init__.py" in files}
    # Every folder of data/ is a package of data (setuptools warns at length about one it is not told of).
    shipped = {os.path.relpath(root, os.path.join(REPO, "data")) for root, _, _ in os.walk(os.path.join(REPO, "data"))}
    shipped = {"stpn_tf.shipped" + ("" if rel == "." else "." + rel.replace(os.sep, ".")) for rel in shipped}
    assert set(tool["packages"]) == folders | {"stpn_tf.configs"} | shipped
    assert tool["package-dir"] == {"stpn_tf.configs": "configs", "stpn_tf.shipped": "data"}
