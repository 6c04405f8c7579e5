"""STPN on ActivityNet 1.3 I3D features (spec sections 2-5; paper Tables 2, 3).

Build the dataset first (training -> "train", validation -> "test"; `testing` has no annotations):

  stpn build-dataset --layout=activitynet_h5 --annotations=activity_net.v1-3.min.json \
      --features=i3d_features.h5 --out=datasets/activitynet13
  (releases resampled to a fixed number of snippets per video: add --snippet_time=duration)

then train each stream, localize and evaluate:

  stpn train --config=configs/activitynet13.py --workdir=runs/anet --stream=rgb
  stpn train --config=configs/activitynet13.py --workdir=runs/anet --stream=flow
  stpn localize --config=configs/activitynet13.py --workdir=runs/anet
  stpn evaluate --ground_truth=datasets/activitynet13/ground_truth.json --subset=test \
      --predictions=runs/anet/detections.json --protocol=activitynet --tiou_thresholds=0.5,0.55,0.6,0.65,0.7,0.75,0.8,0.85,0.9,0.95

The paper reports mAP@0.5 / 0.75 / 0.95 = 29.3 / 16.9 / 2.6 on validation. It gives no ActivityNet-
specific training length; the THUMOS14 settings are kept and the step count scaled to the ~50x larger
training split is a guess to tune. Any value can be overridden, e.g. `--config.train.steps=50000`.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()

    config.dataset = ml_collections.ConfigDict()
    # Directory written by `stpn build-dataset` (TFRecord shards + dataset.json + ground_truth.json).
    config.dataset.dir = "datasets/activitynet13"
    config.dataset.train_split = "train"
    config.dataset.test_split = "test"

    config.model = ml_collections.ConfigDict()
    config.model.attention_units = 256
    config.model.pooling = "mean"  # "mean" (public reproduction) or "sum" (eq. 1 as written)
    config.model.variant = "full"  # "full", "no_sparsity" or "no_attention"
    config.model.beta = 1e-4

    config.train = ml_collections.ConfigDict()
    config.train.num_snippets = 400
    config.train.batch_size = 6
    config.train.learning_rate = 1e-4
    # About 10,000 training videos (50x THUMOS14's 200): more steps than THUMOS14's 24,000.
    config.train.steps = 100000
    config.train.steps_per_epoch = 1000  # Keras "epochs" are logging/checkpoint periods here.
    config.train.shuffle_buffer = 1024
    config.train.seed = 0
    config.train.deterministic = True
    config.train.jit_compile = True
    # "default" (one device), "mirrored" (all local GPUs) or "one_device:/gpu:0".
    config.train.strategy = "default"

    config.localize = ml_collections.ConfigDict()
    config.localize.num_snippets = 400  # the sampling grid at test time
    config.localize.all_snippets = False  # True: run on every real snippet instead of the grid
    config.localize.class_threshold = 0.1
    config.localize.tcam_threshold = 0.05
    config.localize.alpha = 0.5
    config.localize.interpolation = 24
    config.localize.nms_threshold = 0.5
    config.localize.max_detections = 200
    config.localize.batch_size = 16

    config.evaluate = ml_collections.ConfigDict()
    # The exact floats of numpy.linspace(0.5, 0.95, 10), the ActivityNet protocol (spec §4.1): a match
    # needs tIoU >= threshold, so 0.8999999999999999 (not 0.9) is what the official evaluator uses.
    config.evaluate.tiou_thresholds = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.8999999999999999, 0.95)
    config.evaluate.protocol = "activitynet"  # the THUMOS14 toolkit protocol does not apply

    # Only used by `stpn demo` (the embedded synthetic dataset); kept here so the same keys exist.
    config.synthetic = ml_collections.ConfigDict()
    config.synthetic.seed = 0
    config.synthetic.feature_dim = 1024
    config.synthetic.max_snippets = 0  # 0 keeps every video's real length
    config.synthetic.num_shards = 4
    return config
