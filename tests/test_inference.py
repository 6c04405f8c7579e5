"""inference.py: raw outputs round trip, and batched localization + JSON equal to the numpy reference."""

import numpy as np
import pytest

from stpn_tf import inference, localize_reference
from stpn_tf.errors import StpnError

CLASSES = ["Jump", "Run", "Swim"]


def _raw(num_videos=5, t=12, c=3, seed=0):
    rng = np.random.default_rng(seed)
    raw = {
        "video_id": np.array([f"v{i}" for i in range(num_videos)]),
        "length": np.full(num_videos, t, np.int32),
        "num_snippets": rng.integers(3, 40, num_videos).astype(np.int32),
        "seconds_per_snippet": np.full(num_videos, 0.64, np.float32),
        "classes": np.array(CLASSES),
    }
    raw["duration"] = (raw["num_snippets"] * 0.64).astype(np.float32)
    raw["length"][1] = 7  # a padded video: only 7 valid grid positions
    for s in ("rgb", "flow"):
        raw[f"{s}/attention"] = rng.uniform(0, 1, (num_videos, t)).astype(np.float32)
        raw[f"{s}/tcam"] = rng.normal(0, 2, (num_videos, t, c)).astype(np.float32)
        raw[f"{s}/probabilities"] = rng.uniform(0, 1, (num_videos, c)).astype(np.float32)
    return raw


def test_save_and_load_raw_round_trip(tmp_path):
    raw = _raw()
    path = str(tmp_path / "raw.npz")
    inference.save_raw(path, raw)
    loaded = inference.load_raw(path)
    assert loaded.keys() == raw.keys()
    for key, value in raw.items():
        np.testing.assert_array_equal(loaded[key], value)
    (tmp_path / "bad.npz").write_bytes(b"not an npz")
    with pytest.raises(StpnError, match="bad.npz"):
        inference.load_raw(str(tmp_path / "bad.npz"))
    with pytest.raises(StpnError, match="missing.npz"):
        inference.load_raw(str(tmp_path / "missing.npz"))


@pytest.mark.parametrize("streams", [("rgb", "flow"), ("flow",)])
def test_localize_raw_equals_reference(streams):
    raw = _raw()
    params = dict(class_threshold=0.3, tcam_threshold=0.3, alpha=0.5, interpolation=4, nms_threshold=0.5,
                  max_detections=20, max_components_per_class=64, max_classes_per_video=None)
    # batch_size 2 over 5 videos: the last batch is padded, which must not change anything.
    results = inference.localize_raw(raw, streams=streams, batch_size=2, **params)["results"]
    first, second = streams[0], streams[-1]
    assert sorted(results) == [f"v{i}" for i in range(5)]
    total = 0
    for i in range(5):
        stream = lambda s: {k: raw[f"{s}/{k}"][i] for k in ("attention", "tcam", "probabilities")}  # noqa: E731
        expected = localize_reference.localize_video(
            stream(first), stream(second), length=int(raw["length"][i]), num_snippets=int(raw["num_snippets"][i]),
            seconds_per_snippet=float(raw["seconds_per_snippet"][i]), duration=float(raw["duration"][i]), **params)
        got = results[f"v{i}"]
        assert [d["label"] for d in got] == [CLASSES[e.class_index] for e in expected]
        for d, e in zip(got, expected):
            assert d["score"] == pytest.approx(e.score, abs=1e-5)
            assert d["segment"] == pytest.approx([e.start, e.end], abs=1e-4)
        total += len(expected)
    assert total > 0  # the comparison is not vacuous
