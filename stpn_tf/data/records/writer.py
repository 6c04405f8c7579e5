"""Sharded, atomic writing of serialized video records into one split of a dataset directory."""

from __future__ import annotations

import os
from collections.abc import Mapping

import tensorflow as tf

from stpn_tf.artifacts import shards as shard_files
from stpn_tf.core import atomic
from stpn_tf.core.errors import StpnError
from stpn_tf.data.records.schema import split_example


class ShardedWriter:
    """Writes serialized examples round-robin into `num_shards` shards of one split, atomically.

    Usage:
      with ShardedWriter(out_dir, "train", 4) as writer:
        for example in examples:
          writer.write(example)
      writer.shards   # final paths, writer.counts: records (videos) per shard
      writer.shard_records   # {file name: records}, what dataset.json records (SplitInfo.shard_records)

    `storage` is "combined" (one file per shard, `write(make_example(...))`) or "by_stream" (one file per
    shard and stream; `write(make_stream_examples(...))`, or a combined example, which is split); the
    file names are stpn_tf.artifacts.shards'.

    Records go to hidden temporary files (stpn_tf.core.atomic names) in `out_dir`; on a clean exit from
    the `with` block they are renamed to their final names (replacing older shards of the same name) and
    the split's shards of any other count or storage are removed. On an exception they are deleted; a
    killed process leaves only the hidden temporaries, which `list_shards` ignores and the next
    `ShardedWriter` on the same directory removes.
    """

    def __init__(self, out_dir: str, split: str, num_shards: int, *, storage: str = shard_files.COMBINED):
        if num_shards < 1:
            raise StpnError(f"num_shards must be >= 1, got {num_shards}")
        self.out_dir = out_dir
        self.split = shard_files.check_split(split)
        self.num_shards = int(num_shards)
        self.storage = shard_files.check_storage(storage)
        self.counts = [0] * self.num_shards
        self.shards: list[str] = []
        self._names = shard_files.shard_names(split, self.num_shards, self.storage)
        self._writers: list[tf.io.TFRecordWriter] = []
        self._temps: list[str] = []
        self._next = 0

    @property
    def num_written(self) -> int:
        return sum(self.counts)

    @property
    def shard_records(self) -> dict[str, int]:
        """{shard file name: records written to it}, every file of the split (by_stream: one record per
        video in each stream's file)."""
        return {name: self.counts[k % self.num_shards] for k, name in enumerate(self._names)}

    def __enter__(self) -> "ShardedWriter":
        tf.io.gfile.makedirs(self.out_dir)
        shard_files.remove_stale_temporaries(self.out_dir, self.split)
        for name in self._names:
            temp = atomic.temporary_name(os.path.join(self.out_dir, name))
            self._temps.append(temp)
            self._writers.append(tf.io.TFRecordWriter(temp))
        return self

    def write(self, serialized: bytes | Mapping[str, bytes]) -> None:
        """Appends one video to the next shard (round-robin).

        Args:
          serialized: combined storage: a serialized example (`make_example`). by_stream storage: the
            records of `make_stream_examples`, or a combined example (split with `split_example`).
        """
        if not self._writers:
            raise RuntimeError("ShardedWriter.write called outside its `with` block")
        if self.storage == shard_files.COMBINED:
            if not isinstance(serialized, bytes):
                raise TypeError("a combined-storage ShardedWriter takes one serialized example (bytes)")
            records = [(self._next, serialized)]
        else:
            by_stream = split_example(serialized) if isinstance(serialized, bytes) else serialized
            if set(by_stream) != set(shard_files.STREAMS):
                raise TypeError(f"a by_stream ShardedWriter takes one record per stream {shard_files.STREAMS}, "
                                f"got {sorted(by_stream)}")
            records = [(k * self.num_shards + self._next, by_stream[s]) for k, s in enumerate(shard_files.STREAMS)]
        for index, record in records:
            try:
                self._writers[index].write(record)
            except tf.errors.OpError as error:
                raise self._write_failure(error, index) from None
        self.counts[self._next] += 1
        self._next = (self._next + 1) % self.num_shards

    def _write_failure(self, error: Exception, index: int) -> Exception:
        shard = os.path.join(self.out_dir, self._names[index])
        failed = atomic.write_error(shard, error, kept="the shards already in the directory are unchanged")
        return failed if failed is not None else error

    def __exit__(self, exc_type, exc, tb) -> None:
        closing_error = None
        for index, w in enumerate(self._writers):
            try:
                w.close()  # flushes: the last writes can fail here
            except tf.errors.OpError as error:
                closing_error = closing_error or self._write_failure(error, index)
        self._writers = []
        if exc_type is None and closing_error is not None:
            self.__exit__(type(closing_error), closing_error, None)
            raise closing_error
        if exc_type is not None:
            for temp in self._temps:
                atomic.remove_quietly(temp)
            return
        for name, temp in zip(self._names, self._temps):
            final = os.path.join(self.out_dir, name)
            atomic.replace(temp, final)
            self.shards.append(final)
        shard_files.remove_other_shards(self.out_dir, self.split, set(self._names))
