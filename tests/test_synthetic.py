"""The embedded synthetic dataset: real THUMOS14 timings, deterministic features with signal in actions."""

import numpy as np

from stpn_tf.data import synthetic


def test_records_follow_thumos14():
    records = synthetic.thumos14_records()
    assert len(records) == 412
    assert sum(r.subset == "validation" for r in records) == 200
    assert sum(r.subset == "test" for r in records) == 212
    by_id = {r.video_id: r for r in records}
    # First line of BaseballPitch_test.txt: "video_test_0000324  49.2 53.5".
    segs = [(s.start, s.end) for s in by_id["video_test_0000324"].segments if s.label == "BaseballPitch"]
    assert (49.2, 53.5) in segs
    # Duration of video_validation_0000051 in duration.npy is 169.794 s.
    assert abs(by_id["video_validation_0000051"].duration - 169.794) < 1e-9


def test_features_are_deterministic_and_shaped():
    records = [r for r in synthetic.thumos14_records() if r.video_id == "video_validation_0000051"]
    g1 = synthetic.Generator(feature_dim=16, seed=3)
    g2 = synthetic.Generator(feature_dim=16, seed=3)
    g3 = synthetic.Generator(feature_dim=16, seed=4)
    rgb, flow = g1.features(records[0])
    # 169.794 s at 25 fps in 16-frame snippets: floor(169.794 * 25 / 16) = floor(265.3) = 265.
    assert rgb.shape == flow.shape == (265, 16) and rgb.dtype == np.float32
    np.testing.assert_array_equal(rgb, g2.features(records[0])[0])
    assert not np.allclose(rgb, g3.features(records[0])[0])


def test_action_snippets_carry_class_and_actionness_signal():
    gen = synthetic.Generator(feature_dim=32, seed=0)
    records = [r for r in synthetic.thumos14_records() if r.subset == "validation"][:40]
    proj = {"rgb": ([], []), "flow": ([], [])}
    for r in records:
        rgb, flow = gen.features(r)
        presence = synthetic._presence(r, gen.classes, len(rgb), gen.seconds_per_snippet).max(axis=1)
        for name, x in (("rgb", rgb), ("flow", flow)):
            a = x @ gen.streams[name]["actionness"]
            proj[name][0].extend(a[presence >= 0.99])
            proj[name][1].extend(a[presence == 0])
    for name, (inside, outside) in proj.items():
        assert np.mean(inside) > np.mean(outside) + 0.5, name
    # Complementary streams: each class is strong in exactly one of them.
    strong_rgb = gen.streams["rgb"]["strength"] > 1.0
    strong_flow = gen.streams["flow"]["strength"] > 1.0
    assert np.all(strong_rgb ^ strong_flow) and strong_rgb.sum() == 10


def test_write_dataset_records_each_shards_record_count(synthetic_dataset):
    import os

    import tensorflow as tf

    from stpn_tf.artifacts.dataset_dir import read_dataset_info

    info = read_dataset_info(synthetic_dataset)
    for split in info.splits.values():
        assert sorted(split.shard_records) == sorted(split.shards)
        for name, count in split.shard_records.items():
            assert count == sum(1 for _ in tf.data.TFRecordDataset(os.path.join(synthetic_dataset, name)))
        assert sum(split.shard_records.values()) == split.num_videos
