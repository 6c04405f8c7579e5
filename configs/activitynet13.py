"""STPN on ActivityNet 1.3 I3D features (spec sections 2-5; paper Tables 2, 3).

Build the dataset first (training -> "train", validation -> "test"; `testing` has no annotations):

  stpn build-dataset --layout=activitynet_h5 --annotations=activity_net.v1-3.min.json \
      --features=i3d_features.h5 --out=datasets/activitynet13
  (releases resampled to a fixed number of snippets per video: add --snippet_time=duration)

then train each stream, localize and evaluate:

  stpn train --config=activitynet13 --workdir=runs/anet --stream=rgb
  stpn train --config=activitynet13 --workdir=runs/anet --stream=flow
  stpn localize --workdir=runs/anet
  stpn evaluate --ground_truth=datasets/activitynet13/ground_truth.json --subset=test \
      --predictions=runs/anet/detections.json --protocol=activitynet  # numpy.linspace(0.5, 0.95, 10)

The paper reports mAP@0.5 / 0.75 / 0.95 = 29.3 / 16.9 / 2.6 on validation. It gives no ActivityNet-
specific training length; the THUMOS14 settings are kept and the step count scaled to the ~50x larger
training split is a guess to tune. Any value can be overridden, e.g. `--config.train.steps=50000`.
"""

from stpn_tf.configs import thumos14  # same keys and defaults; only what differs is set here


def get_config():
    config = thumos14.get_config()
    config.dataset.dir = "datasets/activitynet13"
    # About 10,000 training videos (50x THUMOS14's 200): more steps than THUMOS14's 24,000.
    config.train.steps = 100000
    config.train.steps_per_epoch = 1000
    config.train.shuffle_buffer = 1024
    config.train.cache_features = False  # ~10,000 training videos: read them from the TFRecords each epoch
    # The exact floats of numpy.linspace(0.5, 0.95, 10), the ActivityNet protocol (spec section 4.1): a
    # match needs tIoU >= threshold, so 0.8999999999999999 (not 0.9) is what the official evaluator uses.
    config.evaluate.tiou_thresholds = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.8999999999999999, 0.95)
    config.evaluate.protocol = "activitynet"  # the THUMOS14 toolkit protocol does not apply
    # Every snippet of ~5,000 validation videos with 200 classes would not fit in memory: tune on the grid.
    config.tune.space.all_snippets = (False,)
    return config
