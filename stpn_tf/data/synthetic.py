"""The embedded default dataset: THUMOS14 timings with synthesized two-stream snippet features.

Every video keeps its real THUMOS14 duration, subset and ground-truth intervals (from the annotation files
shipped in the package (stpn_tf.core.resources, `thumos14/`)); only the features are synthetic. Per stream and snippet:

    x_t = scene(video) + sum_c presence_c(t) * strength_s(c) * pattern_s(c)
          + actionness_s * presence(t) + distractors(t) + noise

- class patterns are random unit directions, one per class and stream;
- scene context is shared by classes that happen in similar places (e.g. all athletics-field events), so
  averaging a whole video cannot tell those classes apart: the model has to attend to the action snippets;
- a class-agnostic actionness direction marks action snippets (what the attention module can learn);
- the streams are complementary: half of the classes are "appearance" classes (strong in RGB, weak in
  flow), the other half "motion" classes (the reverse); RGB evidence also lingers a few snippets around an
  action (blurry boundaries) while flow has bursts of class-less camera motion (false actionness);
- background snippets sometimes show a weak pattern of a class of the same scene (hard negatives).

Everything is a deterministic function of the seed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Iterator

import numpy as np

from stpn_tf.core import resources
from stpn_tf.artifacts import annotations
from stpn_tf.artifacts import dataset_dir
from stpn_tf.artifacts.dataset_dir import DatasetInfo, SplitInfo


# Scene groups: classes filmed in similar places share context.
SCENES = (
    ("HighJump", "LongJump", "PoleVault", "JavelinThrow", "HammerThrow", "Shotput", "ThrowDiscus"),
    ("CliffDiving", "Diving"),
    ("CricketBowling", "CricketShot"),
    ("BasketballDunk", "VolleyballSpiking", "TennisSwing"),
    ("SoccerPenalty", "FrisbeeCatch", "BaseballPitch", "GolfSwing"),
    ("CleanAndJerk", "Billiards"),
)

FPS = 25.0
STRIDE_FRAMES = 16


@dataclasses.dataclass(frozen=True)
class SyntheticVideo:
    """One video of the synthetic dataset.

    Attributes:
        record: the real THUMOS14 annotation of the video (duration, labels, segments).
        rgb: `[L, D]` float32 RGB-stream features.
        flow: `[L, D]` float32 flow-stream features.
    """

    record: annotations.VideoRecord
    rgb: np.ndarray
    flow: np.ndarray


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    v = rng.standard_normal((n, dim))
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _video_seed(seed: int, video_id: str) -> int:
    # Independent of iteration order, so any subset of videos is generated identically.
    digest = hashlib.sha256(f"{seed}:{video_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def _presence(record: annotations.VideoRecord, classes: list[str], num_snippets: int, sps: float):
    """`[L, C]` fraction of each snippet's time span covered by each class's ground truth."""
    starts = np.arange(num_snippets) * sps
    ends = starts + sps
    out = np.zeros((num_snippets, len(classes)))
    index = {c: i for i, c in enumerate(classes)}
    for seg in record.segments:
        overlap = np.clip(np.minimum(ends, seg.end) - np.maximum(starts, seg.start), 0.0, None) / sps
        c = index[seg.label]
        out[:, c] = np.maximum(out[:, c], overlap)
    return out


class Generator:
    """Synthesizes features for THUMOS14 videos.

    Args:
        feature_dim: D per stream.
        seed: global seed; the same seed gives the same features.
        noise: standard deviation of the per-dimension Gaussian noise.
        confusion: strength of the patterns of absent classes in the background.
        background_rate: expected number of such background events per background snippet.
        max_snippets: if > 0, caps the number of snippets per video by cutting the video (keeps tests fast;
            the demo uses 0 = real lengths).
    """

    def __init__(
        self,
        feature_dim: int = 32,
        seed: int = 0,
        noise: float = 0.35,
        confusion: float = 1.2,
        background_rate: float = 0.15,
        max_snippets: int = 0,
    ):
        self.feature_dim = feature_dim
        self.confusion = confusion
        self.background_rate = background_rate
        self.seed = seed
        self.noise = noise
        self.max_snippets = max_snippets
        self.classes = list(annotations.THUMOS14_CLASSES)
        rng = np.random.default_rng(seed)
        num_classes = len(self.classes)
        self.scene_of = np.zeros(num_classes, dtype=np.int64)
        for g, members in enumerate(SCENES):
            for name in members:
                self.scene_of[self.classes.index(name)] = g
        self.streams = {}
        order = rng.permutation(num_classes)
        appearance = np.zeros(num_classes, dtype=bool)
        appearance[order[: num_classes // 2]] = True
        for stream in ("rgb", "flow"):
            strong = appearance if stream == "rgb" else ~appearance
            self.streams[stream] = {
                "patterns": _unit(rng, num_classes, feature_dim),
                "scenes": _unit(rng, len(SCENES), feature_dim),
                "actionness": _unit(rng, 1, feature_dim)[0],
                "strength": np.where(strong, 1.6, 0.55),
            }

    @property
    def seconds_per_snippet(self) -> float:
        return STRIDE_FRAMES / FPS

    def num_snippets(self, duration: float) -> int:
        n = max(1, int(np.floor(duration * FPS / STRIDE_FRAMES)))
        return min(n, self.max_snippets) if self.max_snippets > 0 else n

    def features(self, record: annotations.VideoRecord) -> tuple[np.ndarray, np.ndarray]:
        """Returns `(rgb, flow)`, each `[L, D]` float32, for one annotated video."""
        rng = np.random.default_rng(_video_seed(self.seed, record.video_id))
        sps = self.seconds_per_snippet
        length = self.num_snippets(record.duration)
        presence = _presence(record, self.classes, length, sps)
        any_action = presence.max(axis=1)
        labelled = [self.classes.index(c) for c in record.labels]
        scene_ids = sorted({int(self.scene_of[c]) for c in labelled}) or [int(rng.integers(len(SCENES)))]
        # Per-instance strength variation (some instances are faint).
        instance_gain = rng.uniform(0.6, 1.3, size=len(self.classes))
        out = []
        for stream in ("rgb", "flow"):
            p = self.streams[stream]
            x = self.noise * rng.standard_normal((length, self.feature_dim))
            scene = p["scenes"][scene_ids].sum(axis=0) * 1.2
            drift = np.cumsum(rng.standard_normal((length, 1)), axis=0) / np.sqrt(max(length, 1))
            x += scene[None, :] * (1.0 + 0.2 * drift)
            if stream == "rgb":
                # Appearance lingers around actions: blur the class evidence over +-3 snippets.
                kernel = np.array([0.25, 0.45, 0.7, 1.0, 0.7, 0.45, 0.25])
                evidence = np.stack(
                    [np.convolve(presence[:, c], kernel, mode="same") for c in range(len(self.classes))], axis=1
                ).clip(0.0, 1.0)
                actionness = np.convolve(any_action, kernel, mode="same").clip(0.0, 1.0) * 0.8
            else:
                evidence = presence
                actionness = any_action * 1.2
                # Camera motion: class-less actionness bursts in the background.
                for _ in range(rng.poisson(length / 120.0)):
                    s = int(rng.integers(length))
                    actionness[s : s + int(rng.integers(2, 8))] += 0.9
            x += (evidence * p["strength"] * instance_gain) @ p["patterns"]
            x += actionness[:, None] * p["actionness"][None, :]
            # Background is not empty: unrelated activity shows patterns of classes that are not in the video
            # (so attending to everything hurts classification), and same-scene classes appear faintly.
            absent = [c for c in range(len(self.classes)) if c not in labelled]
            background = np.flatnonzero(any_action == 0)
            for _ in range(rng.poisson(len(background) * self.background_rate)):
                if len(background) == 0:
                    break
                s, c = int(rng.choice(background)), int(rng.choice(absent))
                x[s : s + int(rng.integers(3, 12))] += self.confusion * p["patterns"][c]
            same_scene = [c for c in range(len(self.classes)) if self.scene_of[c] in scene_ids]
            for _ in range(rng.poisson(length / 80.0)):
                s, c = int(rng.integers(length)), int(rng.choice(same_scene))
                x[s : s + int(rng.integers(2, 6))] += 0.45 * p["patterns"][c]
            out.append(x.astype(np.float32))
        return out[0], out[1]


def default_annotations() -> str:
    """The shipped THUMOS14 annotation folder (package data)."""
    return resources.resource_path(resources.THUMOS14)


def thumos14_records(annotation_dir: str | None = None) -> list[annotations.VideoRecord]:
    """The 412 Thumos14reduced videos (200 validation, 212 test) with real durations and toolkit segments.

    Uses only files that load without pickle: `videoname.npy`, `subset.npy`, `duration.npy` and the toolkit
    txt files.
    """
    annotation_dir = annotation_dir or default_annotations()
    reduced = os.path.join(annotation_dir, "thumos14reduced")
    toolkit = os.path.join(annotation_dir, "th14_evalkit_groundtruth")
    durations = annotations.read_thumos14_durations(reduced)
    subsets = annotations.read_thumos14_subsets(reduced)
    by_id = {}
    for subset in ("validation", "test"):
        for r in annotations.read_thumos14_toolkit(toolkit, subset=subset, durations=durations):
            by_id[r.video_id] = r
    records = []
    for video_id, subset in subsets.items():
        r = by_id.get(video_id)
        if r is None:
            r = annotations.VideoRecord(video_id, subset, durations[video_id], (), ())
        records.append(dataclasses.replace(r, subset=subset, duration=durations[video_id]))
    return records


def generate(
    *, feature_dim: int = 32, seed: int = 0, max_snippets: int = 0, annotation_dir: str | None = None
) -> Iterator[SyntheticVideo]:
    """Yields every THUMOS14 video (validation first, then test) with synthetic features."""
    gen = Generator(feature_dim=feature_dim, seed=seed, max_snippets=max_snippets)
    for record in thumos14_records(annotation_dir):
        rgb, flow = gen.features(record)
        yield SyntheticVideo(record, rgb, flow)


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """Settings of the embedded dataset (`stpn demo`).

    Attributes:
      seed: Generator seed; the same seed gives the same features.
      feature_dim: D per stream.
      max_snippets: Cap on snippets per video (0 keeps every video's real length).
      num_shards: Shards per split.
    """

    seed: int = 0
    feature_dim: int = 32
    max_snippets: int = 0
    num_shards: int = 2

    def matches(self, info: DatasetInfo) -> bool:
        """True when a written dataset was made with these settings."""
        made = info.synthetic or {}
        return (info.feature_dim == self.feature_dim and made.get("seed") == self.seed
                and made.get("max_snippets") == self.max_snippets)


# Split names of the TFRecords: THUMOS14 trains on its validation videos and tests on its test videos.
SPLIT_OF_SUBSET = {"validation": "train", "test": "test"}


def write_dataset(
    out_dir: str, *, feature_dim: int = 32, seed: int = 0, max_snippets: int = 0, num_shards: int = 2,
    annotation_dir: str | None = None,
) -> DatasetInfo:
    """Writes the synthetic dataset as a dataset directory that `stpn train` reads.

    Produces `train-*.tfrecord` / `test-*.tfrecord` shards, `ground_truth.json` (the real THUMOS14 test and
    validation annotations, with the durations the features were made for) and `dataset.json`.

    Returns:
        The DatasetInfo written to `dataset.json`.
    """
    from stpn_tf.data.records.schema import make_example
    from stpn_tf.data.records.writer import ShardedWriter

    os.makedirs(out_dir, exist_ok=True)
    gen = Generator(feature_dim=feature_dim, seed=seed, max_snippets=max_snippets)
    class_index = {c: i for i, c in enumerate(gen.classes)}
    records = thumos14_records(annotation_dir)
    splits = {}
    for subset, split in SPLIT_OF_SUBSET.items():
        snippets = 0
        with ShardedWriter(out_dir, split, num_shards) as writer:
            for record in records:
                if record.subset != subset:
                    continue
                rgb, flow = gen.features(record)
                snippets += len(rgb)
                writer.write(
                    make_example(
                        video_id=record.video_id, subset=split, rgb=rgb, flow=flow,
                        labels=[class_index[c] for c in record.labels],
                        duration=len(rgb) * gen.seconds_per_snippet if max_snippets else record.duration,
                        fps=FPS, stride_frames=STRIDE_FRAMES,
                    )
                )
        splits[split] = SplitInfo(num_videos=writer.num_written, num_snippets=snippets,
                                  shards=[os.path.basename(p) for p in writer.shards],
                                  shard_records=writer.shard_records)
    annotations.write_activitynet_json(records, dataset_dir.ground_truth_path(out_dir))
    info = DatasetInfo(name="synthetic_thumos14", layout="synthetic", classes=gen.classes, feature_dim=feature_dim,
                       fps=FPS, stride_frames=STRIDE_FRAMES, splits=splits,
                       synthetic={"seed": seed, "max_snippets": max_snippets})
    dataset_dir.write_dataset_info(out_dir, info)  # last: its presence marks a complete dataset
    return info
