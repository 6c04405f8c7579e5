"""What checking every shard's record count costs a reader.

1. Writes a split of N small-to-THUMOS14-size records (default 800 records of 64 KB in 4 shards) with
   `ShardedWriter` and records its shard counts in dataset.json, as `stpn build-dataset` does.
2. Reads every record through `reader.tfrecord_dataset` (the counted path training and localization use:
   `assert_cardinality` per file against dataset.json's counts) and through the same interleave of plain
   `TFRecordDataset`s (the reader before the check); best of 3 passes each, records/s.
3. Times `scan_records` (the header walk a dataset without recorded counts gets once per file read).

Run: .venv/bin/python bench/shard_counts.py [--records=800] [--record_kb=64] [--shards=4]
Last line: RESULT counted_vs_plain_read=<records/s counted / records/s plain>
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # noqa: E402

from stpn_tf.artifacts.dataset_dir import DatasetInfo, SplitInfo, write_dataset_info  # noqa: E402
from stpn_tf.data.records import reader  # noqa: E402
from stpn_tf.data.records.writer import ShardedWriter  # noqa: E402


def best_rate(make, repeats: int = 3) -> float:
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        n = sum(1 for _ in make())
        best = max(best, n / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=800)
    parser.add_argument("--record_kb", type=int, default=64)
    parser.add_argument("--shards", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        payload = os.urandom(args.record_kb * 1024)
        with ShardedWriter(out, "train", args.shards) as writer:
            for _ in range(args.records):
                writer.write(payload)
        names = [os.path.basename(p) for p in writer.shards]
        write_dataset_info(out, DatasetInfo(name="bench", classes=["a"], feature_dim=1, fps=25.0, stride_frames=16,
                                            splits={"train": SplitInfo(args.records, 0, names,
                                                                       shard_records=writer.shard_records)}))
        paths = writer.shards

        def plain():
            files = tf.data.Dataset.from_tensor_slices(paths)
            return files.interleave(tf.data.TFRecordDataset, cycle_length=min(len(paths), 4), block_length=1,
                                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

        counted_rate = best_rate(lambda: reader.tfrecord_dataset(paths))
        plain_rate = best_rate(plain)
        start = time.perf_counter()
        scanned = sum(reader.scan_records(p) for p in paths)
        scan_us = (time.perf_counter() - start) / scanned * 1e6
    print(f"{args.records} records of {args.record_kb} KB in {args.shards} shards")
    print(f"read with the count check: {counted_rate:,.0f} records/s; plain interleave: {plain_rate:,.0f} records/s")
    print(f"header walk (datasets without recorded counts): {scan_us:.1f} us per record, local disk")
    print(f"RESULT counted_vs_plain_read={counted_rate / plain_rate:.3f}")


if __name__ == "__main__":
    main()
