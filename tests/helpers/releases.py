"""Tiny feature releases written in each real release layout, with synthetic features.

The build-dataset tests parse them; the end-to-end CLI, fault and study tests build datasets from them.
Annotations are the shipped THUMOS14 ones (a subset of videos); the features are noise plus a
class-specific column inside the annotated segments, so a model can learn them.
"""

from __future__ import annotations

import json
import os
import shutil

import h5py
import numpy as np

from stpn_tf.artifacts import annotations as ann
from stpn_tf.core import resources
from stpn_tf.data.build import run_build_dataset

REAL = resources.resource_path(resources.THUMOS14)
REDUCED = os.path.join(REAL, "thumos14reduced")
SECONDS_PER_SNIPPET = 16 / 25  # the THUMOS14 releases: 16-frame snippets at 25 fps


def _real_reduced_arrays():
    """The shipped Thumos14reduced annotation arrays (our own trusted copy, so pickle is fine)."""
    out = {}
    for name in ("videoname", "subset", "duration", "segments", "labels", "labels_all", "classlist",
                 "original_fps", "extracted_fps"):
        out[name] = np.load(os.path.join(REDUCED, name + ".npy"), allow_pickle=True)
    return out


def pick_thumos14_videos(num_train: int, num_test: int, include: tuple[str, ...] = ()) -> list[int]:
    """Indices into the real arrays: the first `num_train` validation and `num_test` test videos."""
    arrays = _real_reduced_arrays()
    names = [n.decode() for n in arrays["videoname"]]
    subsets = [s.decode() for s in arrays["subset"]]
    train = [i for i, s in enumerate(subsets) if s == "validation"][:num_train]
    test = [i for i, s in enumerate(subsets) if s == "test"][:num_test]
    extra = [names.index(v) for v in include if names.index(v) not in test]
    return train + test + extra


def synthetic_features(segments, labels, num_snippets: int, feature_dim: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """[L, D] RGB and flow: small noise plus a class-specific column inside annotated segments."""
    rgb = rng.normal(0.0, 0.1, size=(num_snippets, feature_dim)).astype(np.float32)
    flow = rng.normal(0.0, 0.1, size=(num_snippets, feature_dim)).astype(np.float32)
    times = (np.arange(num_snippets) + 0.5) * SECONDS_PER_SNIPPET
    for (start, end), label in zip(segments, labels):
        c = ann.THUMOS14_CLASSES.index(label) if label in ann.THUMOS14_CLASSES else hash(label) % 97
        inside = (times >= float(start)) & (times <= float(end))
        rgb[inside, c % feature_dim] += 1.0
        flow[inside, (c + 1) % feature_dim] += 1.0
    return rgb, flow


def write_thumos14_reduced_release(root: str, *, indices: list[int] | None = None, feature_dim: int = 8,
                                   max_snippets: int | None = None, seed: int = 0) -> dict[str, str]:
    """W-TALC layout: `<root>/Thumos14reduced-Annotations/*.npy` (real arrays, a subset of videos) and
    `<root>/Thumos14reduced-I3D-JOINTFeatures.npy`, an object array of [T_i, 2 * feature_dim] float32.

    Returns:
      {"annotations": folder, "features": joint .npy path}.
    """
    arrays = _real_reduced_arrays()
    n = len(arrays["videoname"])
    indices = list(range(n)) if indices is None else indices
    folder = os.path.join(root, "Thumos14reduced-Annotations")
    os.makedirs(folder, exist_ok=True)
    for name, arr in arrays.items():
        sub = arr if name == "classlist" else arr[indices]
        np.save(os.path.join(folder, name + ".npy"), sub, allow_pickle=sub.dtype == object)
    shutil.copy(os.path.join(REDUCED, "Ambiguous_test.txt"), folder)
    rng = np.random.default_rng(seed)
    joint = np.empty(len(indices), dtype=object)
    for k, i in enumerate(indices):
        length = max(1, int(arrays["duration"][i, 0] / SECONDS_PER_SNIPPET))
        length = min(length, max_snippets) if max_snippets else length
        rgb, flow = synthetic_features(arrays["segments"][i], arrays["labels"][i], length, feature_dim, rng)
        joint[k] = np.concatenate([rgb, flow], axis=1)
    features = os.path.join(root, "Thumos14reduced-I3D-JOINTFeatures.npy")
    np.save(features, joint, allow_pickle=True)
    return {"annotations": folder, "features": features}


def write_basnet_release(root: str, *, num_train: int = 3, num_test: int = 3, feature_dim: int = 8,
                         seed: int = 0) -> dict[str, str]:
    """BaS-Net layout: `<root>/gt.json` (string segments, no durations, subsets train/test),
    `split_train.txt`, `split_test.txt` and `<root>/features/{train,test}/{rgb,flow}/<video>.npy`.

    Returns:
      {"annotations": gt.json, "features": features folder, "durations": the shipped arrays folder}.
    """
    real = ann.read_activitynet_json(os.path.join(REAL, "basnet", "gt.json"))
    durations = ann.read_thumos14_durations(REDUCED)
    chosen = [r for r in real if r.subset == "train"][:num_train] + \
             [r for r in real if r.subset == "test"][:num_test]
    rng = np.random.default_rng(seed)
    database = {}
    for r in chosen:
        database[r.video_id] = {"subset": r.subset, "annotations": [
            {"segment": [f"{s.start}", f"{s.end}"], "label": s.label} for s in r.segments]}
        length = max(1, int(durations[r.video_id] / SECONDS_PER_SNIPPET))
        rgb, flow = synthetic_features([(s.start, s.end) for s in r.segments],
                                       [s.label for s in r.segments], length, feature_dim, rng)
        for stream, arr in (("rgb", rgb), ("flow", flow)):
            folder = os.path.join(root, "features", r.subset, stream)
            os.makedirs(folder, exist_ok=True)
            np.save(os.path.join(folder, r.video_id + ".npy"), arr)
    with open(os.path.join(root, "gt.json"), "w") as f:
        json.dump({"database": database}, f)
    for subset in ("train", "test"):
        with open(os.path.join(root, f"split_{subset}.txt"), "w") as f:
            f.writelines(r.video_id + "\n" for r in chosen if r.subset == subset)
    return {"annotations": os.path.join(root, "gt.json"), "features": os.path.join(root, "features"),
            "durations": REDUCED}


def write_toolkit_extract_release(root: str, *, num_train: int = 3, num_test: int = 3, feature_dim: int = 8,
                                  seed: int = 0) -> dict[str, str]:
    """THUMOS14 toolkit ground truth (copied, real) + what `stpn extract` writes:
    `<root>/features/<split>/{rgb,flow,meta}/<video>.{npy,json}` with meta fps/stride/duration.
    Video video_test_0001292 (only Ambiguous segments) is among the test features."""
    gt = os.path.join(root, "th14_evalkit_groundtruth")
    shutil.copytree(os.path.join(REAL, "th14_evalkit_groundtruth"), gt)
    durations = ann.read_thumos14_durations(REDUCED)
    durations["video_test_0001292"] = 180.0  # not in Thumos14reduced
    rng = np.random.default_rng(seed)
    for subset, n in (("validation", num_train), ("test", num_test)):
        records = ann.read_thumos14_toolkit(gt, subset)
        chosen = [r for r in records if r.segments][:n]
        if subset == "test":
            chosen += [r for r in records if r.video_id == "video_test_0001292"]
        for r in chosen:
            length = max(1, int(durations[r.video_id] / SECONDS_PER_SNIPPET))
            rgb, flow = synthetic_features([(s.start, s.end) for s in r.segments],
                                           [s.label for s in r.segments], length, feature_dim, rng)
            split = "train" if subset == "validation" else "test"
            for kind, payload in (("rgb", rgb), ("flow", flow)):
                os.makedirs(os.path.join(root, "features", split, kind), exist_ok=True)
                np.save(os.path.join(root, "features", split, kind, r.video_id + ".npy"), payload)
            os.makedirs(os.path.join(root, "features", split, "meta"), exist_ok=True)
            with open(os.path.join(root, "features", split, "meta", r.video_id + ".json"), "w") as f:
                json.dump({"fps": 25.0, "stride_frames": 16, "num_frames": length * 16,
                           "num_snippets": length, "duration": durations[r.video_id]}, f)
    return {"annotations": gt, "features": os.path.join(root, "features")}


ACTIVITYNET_CLASSES = ("Bathing dog", "Doing karate", "Playing polo")


def write_activitynet_release(root: str, *, feature_dim: int = 8, seed: int = 0,
                              joint: bool = False) -> dict[str, str]:
    """ActivityNet 1.3 layout: `activity_net.v1-3.min.json` ({"version", "taxonomy", "database"},
    subsets training/validation/testing, testing without annotations) and an HDF5 file keyed "v_<id>"
    holding groups with rgb/flow datasets (or one joint [T, 2D] dataset with `joint=True`)."""
    rng = np.random.default_rng(seed)
    database, taxonomy = {}, [{"nodeId": i, "nodeName": c, "parentId": None, "parentName": None}
                              for i, c in enumerate(ACTIVITYNET_CLASSES)]
    os.makedirs(root, exist_ok=True)
    h5_path = os.path.join(root, "i3d_features.h5")
    with h5py.File(h5_path, "w") as f:
        for i in range(9):
            vid = f"{chr(65 + i)}{i:02d}xYz_k{i}Q"  # 11-character ids like YouTube's
            subset = ("training", "validation", "testing")[i % 3]
            label = ACTIVITYNET_CLASSES[i // 3]
            duration = 20.0 + 5 * i
            segments = [[2.0 + i, 9.5 + i]]
            database[vid] = {"subset": subset, "duration": duration, "resolution": "640x360",
                             "url": f"https://www.youtube.com/watch?v={vid}",
                             "annotations": [] if subset == "testing" else
                             [{"segment": s, "label": label} for s in segments]}
            length = int(duration / SECONDS_PER_SNIPPET)
            rgb, flow = synthetic_features(segments, [label], length, feature_dim, rng)
            if joint:
                f.create_dataset("v_" + vid, data=np.concatenate([rgb, flow], axis=1))
            else:
                g = f.create_group("v_" + vid)
                g.create_dataset("rgb", data=rgb)
                g.create_dataset("flow", data=flow)
    path = os.path.join(root, "activity_net.v1-3.min.json")
    with open(path, "w") as f:
        json.dump({"version": "VERSION 1.3", "taxonomy": taxonomy, "database": database}, f)
    return {"annotations": path, "features": h5_path}


RELEASE_WRITERS = {
    "thumos14_reduced": lambda root, d: write_thumos14_reduced_release(
        root, indices=pick_thumos14_videos(6, 4), feature_dim=d),
    "thumos14_npy": lambda root, d: write_basnet_release(root, num_train=6, num_test=4, feature_dim=d),
    "thumos14_extract": lambda root, d: write_toolkit_extract_release(root, num_train=6, num_test=4,
                                                                      feature_dim=d),
    "activitynet_h5": lambda root, d: write_activitynet_release(root, feature_dim=d),
}


def build_tiny_dataset(root: str, release: str = "thumos14_reduced", feature_dim: int = 8) -> str:
    """Writes a tiny release of kind `release` (a RELEASE_WRITERS key) under `root`, runs
    build-dataset on it and returns the dataset directory (for the end-to-end test)."""
    files = RELEASE_WRITERS[release](os.path.join(root, "release"), feature_dim)
    layout = "thumos14_npy" if release == "thumos14_extract" else release
    out = os.path.join(root, "dataset")
    run_build_dataset(layout=layout, out=out, allow_pickle=release == "thumos14_reduced", progress=False,
                      **files)
    return out
