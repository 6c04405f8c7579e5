"""TFRecords of a dataset: one `tf.train.Example` per video (or one per video and stream).

  schema   the Example's fields, `make_example` / `make_stream_examples` (writing one video)
  decoder  `parse_example`: a serialized record -> a dict of namespaced tensors (graph-safe)
  writer   `ShardedWriter`: records round-robin into a split's shards, atomically
  reader   `tfrecord_dataset`, `read_records`: the records of a split's shards in either storage, each
           file checked against the record count dataset.json records for it, and the diagnostics
           that name a corrupt, cut or padded shard

The shard file names and the two storages ("by_stream", "combined") belong to the dataset directory,
stpn_tf.artifacts.shards; the input pipelines that turn decoded records into model inputs are
stpn_tf.data.pipeline.
"""
