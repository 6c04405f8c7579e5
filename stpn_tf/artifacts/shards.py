"""The TFRecord shard files of a dataset directory: their names, the two storages, listing and clean-up.

Two storages of a split (`STORAGES`), told apart by the shard names:

  "by_stream"  (what `stpn build-dataset` writes)  `<split>-rgb-00000-of-00004.tfrecord` and
               `<split>-flow-00000-of-00004.tfrecord`: shard i of both streams holds the same videos in the
               same order, each record the video's Example without the other stream's features. Training
               one stream reads only that stream's files, half the bytes.
  "combined"   `<split>-00000-of-00004.tfrecord`, one record holding both streams; what earlier builds,
               the Beam pipeline and the synthetic demo data write.

What the records hold is stpn_tf.data.records; this module knows only file names. Writers write shards
under hidden temporary names (stpn_tf.core.atomic) and rename them when done, so `list_shards` never
picks up a killed writer's files and `remove_stale_temporaries` clears them. Paths go through
`tf.io.gfile`, so a dataset directory may live on gs://; TensorFlow is imported only when a function
touches the file system.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Sequence

from stpn_tf.core import atomic
from stpn_tf.core.errors import StpnError

STREAMS = ("rgb", "flow")
COMBINED = "combined"
BY_STREAM = "by_stream"
STORAGES = (BY_STREAM, COMBINED)
DEFAULT_STORAGE = BY_STREAM  # for new datasets; readers take both

SHARD_RE = re.compile(r"^(?P<split>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.tfrecord$")
STREAM_SHARD_RE = re.compile(
    r"^(?P<split>.+)-(?P<stream>rgb|flow)-(?P<index>\d{5})-of-(?P<count>\d{5})\.tfrecord$")


def _gfile():
    import tensorflow as tf  # gfile: dataset directories may live on gs://

    return tf.io.gfile


def shard_name(split: str, index: int, num_shards: int) -> str:
    """File name of shard `index` of `num_shards`, e.g. "train-00001-of-00004.tfrecord" (combined storage)."""
    return f"{split}-{index:05d}-of-{num_shards:05d}.tfrecord"


def stream_shard_name(split: str, stream: str, index: int, num_shards: int) -> str:
    """File name of one stream's shard (by_stream storage), e.g. "train-rgb-00001-of-00004.tfrecord"."""
    return f"{split}-{stream}-{index:05d}-of-{num_shards:05d}.tfrecord"


def shard_names(split: str, num_shards: int, storage: str = DEFAULT_STORAGE) -> list[str]:
    """Every file name of a split in `storage`, in `list_shards` order (by_stream: rgb shards, then flow)."""
    check_storage(storage)
    if storage == COMBINED:
        return [shard_name(split, i, num_shards) for i in range(num_shards)]
    return [stream_shard_name(split, s, i, num_shards) for s in STREAMS for i in range(num_shards)]


def check_storage(storage: str) -> str:
    if storage not in STORAGES:
        raise StpnError(f"storage must be one of {', '.join(STORAGES)}, got {storage!r}")
    return storage


def shard_split(name: str) -> str | None:
    """The split a shard file name belongs to (either storage), or None for other files."""
    m = STREAM_SHARD_RE.match(name) or SHARD_RE.match(name)
    return m.group("split") if m else None


def check_split(split: str) -> str:
    """A split name shards can carry: not empty, no path, no leading dot, not ending like a stream's shards."""
    if not split or "/" in split or split.startswith(".") or STREAM_SHARD_RE.match(shard_name(split, 0, 1)):
        raise StpnError(f"invalid split name {split!r}" + (
            " (it ends like a stream's shards: -rgb / -flow)" if split.endswith(("-rgb", "-flow")) else ""))
    return split


def remove_other_shards(out_dir: str, split: str, keep: Collection[str]) -> None:
    """Drops the shards of `split` (either storage) not named in `keep`: an earlier build's, with another
    shard count or storage, so that the directory holds one consistent set."""
    gfile = _gfile()
    for name in gfile.listdir(out_dir):
        if shard_split(name) == split and name not in keep:
            gfile.remove(os.path.join(out_dir, name))


def remove_stale_temporaries(out_dir: str, split: str | None = None) -> int:
    """Deletes hidden temporary shard files left by killed writers; returns how many were removed."""
    gfile = _gfile()
    if not gfile.isdir(out_dir):
        return 0
    removed = 0
    for name in gfile.listdir(out_dir):
        if not atomic.is_temporary(name):
            continue
        found = shard_split(name[1:name.index(atomic.TEMP_MARK)])
        if found is not None and (split is None or found == split):
            gfile.remove(os.path.join(out_dir, name))
            removed += 1
    return removed


def _complete_set(dataset_dir: str, split: str, found: dict[int, list[int]], name, what: str) -> list[str]:
    """The paths of one complete shard set (`found`: shard count -> indices present), or StpnError."""
    if len(found) > 1:
        raise StpnError(f"{dataset_dir}: {what} of split {split!r} mix shard counts {sorted(found)}; rebuild it")
    (count, indices), = found.items()
    missing = sorted(set(range(count)) - set(indices))
    if missing:
        raise StpnError(f"{dataset_dir}: split {split!r} is incomplete, missing shard(s) "
                        f"{', '.join(name(i, count) for i in missing)}")
    return [os.path.join(dataset_dir, name(i, count)) for i in range(count)]


def list_shards(dataset_dir: str, split: str) -> list[str]:
    """Returns the shard paths of `split` in `dataset_dir`, in either storage.

    Combined storage: the shards in index order. by_stream storage: the rgb shards in index order, then
    the flow shards (pass the whole list to the readers of stpn_tf.data.records or the pipelines, which
    read only the streams they need).

    Raises:
      StpnError: if there are no shards of that split, the set is incomplete or mixes shard counts (e.g.
        a build that was killed while renaming), one stream's shards are missing, or both storages are
        present.
    """
    gfile = _gfile()
    if not gfile.isdir(dataset_dir):
        raise StpnError(f"{dataset_dir}: dataset directory does not exist")
    combined: dict[int, list[int]] = {}
    streams: dict[str, dict[int, list[int]]] = {}
    for name in gfile.listdir(dataset_dir):
        m = STREAM_SHARD_RE.match(name)
        if m:
            if m.group("split") == split:
                streams.setdefault(m.group("stream"), {}).setdefault(int(m.group("count")), []).append(
                    int(m.group("index")))
            continue
        m = SHARD_RE.match(name)
        if m and m.group("split") == split:
            combined.setdefault(int(m.group("count")), []).append(int(m.group("index")))
    if not combined and not streams:
        raise StpnError(f"{dataset_dir}: no TFRecord shards for split {split!r} "
                        f"(expected files like {stream_shard_name(split, 'rgb', 0, 1)} or "
                        f"{shard_name(split, 0, 1)}; run `stpn build-dataset`)")
    if combined and streams:
        raise StpnError(f"{dataset_dir}: split {split!r} has both combined shards ({split}-NNNNN-of-NNNNN.tfrecord) "
                        f"and by-stream shards ({split}-rgb-* / {split}-flow-*); rebuild it")
    if combined:
        return _complete_set(dataset_dir, split, combined, lambda i, n: shard_name(split, i, n), "shards")
    paths = []
    for stream in STREAMS:
        if stream not in streams:
            (other, counts), = ((s, c) for s, c in streams.items())
            count = max(counts)
            raise StpnError(f"{dataset_dir}: split {split!r} has {other} shards but no {stream} shards "
                            f"(missing {stream_shard_name(split, stream, 0, count)} ... "
                            f"{stream_shard_name(split, stream, count - 1, count)}); rebuild it")
        paths.append(_complete_set(dataset_dir, split, streams[stream],
                                   lambda i, n, s=stream: stream_shard_name(split, s, i, n), f"the {stream} shards"))
    if len(paths[0]) != len(paths[1]):
        raise StpnError(f"{dataset_dir}: split {split!r} has {len(paths[0])} rgb shards but {len(paths[1])} flow "
                        "shards; rebuild it")
    return paths[0] + paths[1]


def storage_of(paths: Sequence[str]) -> str:
    """COMBINED or BY_STREAM, from the file names; StpnError when a list mixes both."""
    kinds = {BY_STREAM if STREAM_SHARD_RE.match(os.path.basename(str(p))) else COMBINED for p in paths}
    if len(kinds) > 1:
        raise StpnError(f"the TFRecord files mix by-stream shards (<split>-rgb-* / <split>-flow-*) and combined "
                        f"shards: {', '.join(str(p) for p in paths)}")
    return kinds.pop() if kinds else COMBINED


def stream_files(paths: Sequence[str], streams: Sequence[str] = STREAMS) -> dict[str, list[str]]:
    """by_stream shard paths grouped by stream and aligned: entry i of every list is the same shard index.

    The order is that of the first stream's files in `paths`. Raises StpnError naming the shard of a
    stream that has no counterpart among `paths` in another stream asked for.
    """
    by_key: dict[str, dict[tuple[str, str, int, int], str]] = {s: {} for s in STREAMS}
    order: dict[str, list[tuple[str, str, int, int]]] = {s: [] for s in STREAMS}
    for path in paths:
        path = str(path)
        m = STREAM_SHARD_RE.match(os.path.basename(path))
        if m is None:
            raise StpnError(f"{path}: not a by-stream shard (<split>-rgb-NNNNN-of-NNNNN.tfrecord)")
        key = (os.path.dirname(path), m.group("split"), int(m.group("index")), int(m.group("count")))
        by_key[m.group("stream")][key] = path
        order[m.group("stream")].append(key)
    first = streams[0]
    out: dict[str, list[str]] = {s: [] for s in streams}
    for key in order[first]:
        for stream in streams:
            if key not in by_key[stream]:
                directory, split, index, count = key
                raise StpnError(f"{by_key[first][key]}: its {stream} counterpart "
                                f"{os.path.join(directory, stream_shard_name(split, stream, index, count))} "
                                "is not among the files to read")
            out[stream].append(by_key[stream][key])
    for stream in streams[1:]:
        extra = sorted(set(by_key[stream]) - set(order[first]))
        if extra:
            raise StpnError(f"{by_key[stream][extra[0]]}: its {first} counterpart is not among the files to read")
    return out
