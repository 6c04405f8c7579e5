"""The `stpn` command line: `stpn <command> [--config=configs/X.py --config.a.b=v] [flags]`.

Commands:
  demo           synthetic data -> TFRecords -> train both streams -> localize -> evaluate, one go
  train          train one stream (--stream=rgb|flow) on a built dataset
  localize       detections JSON from a training work directory, an export, or raw saved outputs
  evaluate       mAP of a detections file (ActivityNet protocol, THUMOS14 toolkit protocol, or both)
  export         SavedModel with both streams and the localization graph
  build-dataset  public feature releases + annotations -> TFRecords
  extract        raw videos -> I3D two-stream snippet features

This module is the only one that reads the config; everything it calls takes plain keyword arguments.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from stpn_tf.errors import StpnError

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
COMMANDS = ("demo", "train", "localize", "evaluate", "export", "build-dataset", "extract")

config_flags.DEFINE_config_file(
    "config", os.path.join(CONFIG_DIR, "thumos14.py"), "Config file (ml_collections); `stpn demo` defaults to "
    "configs/demo.py. Override any value with --config.a.b=v.", lock_config=True)
flags.DEFINE_string("workdir", None, "Work directory: training outputs, logs, detections.")
flags.DEFINE_enum("stream", None, ["rgb", "flow"], "train: which stream to train.")
# localize
flags.DEFINE_string("out", None, "localize: detections JSON (default <workdir>/detections.json); "
                    "export: SavedModel directory.")
flags.DEFINE_string("split", None, "localize: dataset split (default config.dataset.test_split).")
flags.DEFINE_string("save_raw", None, "localize: also save raw outputs (attention, T-CAM, probabilities) "
                    "to this .npz so thresholds can be swept without rerunning the models.")
flags.DEFINE_string("raw", None, "localize: localize saved raw outputs instead of running the models.")
flags.DEFINE_list("streams", ["rgb", "flow"], "localize: streams to use (rgb,flow / rgb / flow).")
flags.DEFINE_bool("sweep", False, "localize: sweep class and T-CAM thresholds over the raw outputs and print "
                  "the mAP of each setting (needs --ground_truth).")
flags.DEFINE_string("th14_txt", None, "localize: also write THUMOS14 toolkit result txt to this file.")
# evaluate
flags.DEFINE_string("ground_truth", None, "evaluate: ActivityNet/BaS-Net JSON or the toolkit's txt folder.")
flags.DEFINE_string("predictions", None, "evaluate: ActivityNet results JSON or toolkit result txt.")
flags.DEFINE_string("subset", None, "evaluate: ground-truth subset (e.g. test, validation).")
flags.DEFINE_enum("protocol", None, ["activitynet", "th14kit", "both"], "evaluate: protocol "
                  "(default config.evaluate.protocol).")
flags.DEFINE_list("tiou_thresholds", None, "evaluate: tIoU thresholds (THUMOS default 0.1..0.9; "
                  "ActivityNet default 0.5..0.95).")
flags.DEFINE_bool("unknown_labels_as_fp", False, "evaluate: count predictions with labels absent from the "
                  "ground truth as false positives instead of failing.")
flags.DEFINE_string("json_out", None, "evaluate: also write the results as JSON here.")
flags.DEFINE_string("det_txt", None, "evaluate/localize: UCF101 class ids file for toolkit txt "
                    "(default data/thumos14/th14_evalkit_groundtruth/det.txt).")
FLAGS = flags.FLAGS


def _config():
    return FLAGS.config


def _write_config(workdir: str, name: str) -> None:
    """Keeps the resolved config of every run in the work directory."""
    from stpn_tf.data.annotations import atomic_write_text

    os.makedirs(workdir, exist_ok=True)
    atomic_write_text(os.path.join(workdir, f"config.{name}.json"), _config().to_json_best_effort(indent=2))


def _require(**values):
    missing = [f"--{k}" for k, v in values.items() if not v]
    if missing:
        raise StpnError(f"missing required flag(s): {', '.join(missing)}")


def cmd_train(argv):
    from stpn_tf import train

    _require(workdir=FLAGS.workdir, stream=FLAGS.stream)
    cfg = _config()
    _write_config(FLAGS.workdir, f"train.{FLAGS.stream}")
    train.run_train(
        dataset_dir=cfg.dataset.dir, workdir=FLAGS.workdir, stream=FLAGS.stream,
        train_split=cfg.dataset.train_split, **cfg.model.to_dict(), **cfg.train.to_dict(),
    )
    return 0


def _localize_params(cfg) -> dict:
    loc = cfg.localize
    return dict(class_threshold=loc.class_threshold, tcam_threshold=loc.tcam_threshold, alpha=loc.alpha,
                interpolation=loc.interpolation, nms_threshold=loc.nms_threshold,
                max_detections=loc.max_detections)


def cmd_localize(argv):
    from stpn_tf import inference
    from stpn_tf.data import tfrecord

    cfg = _config()
    if FLAGS.raw:
        raw = inference.load_raw(FLAGS.raw)
        out = FLAGS.out or os.path.join(os.path.dirname(os.path.abspath(FLAGS.raw)), "detections.json")
    else:
        _require(workdir=FLAGS.workdir)
        _write_config(FLAGS.workdir, "localize")
        split = FLAGS.split or cfg.dataset.test_split
        meta = tfrecord.read_dataset_metadata(cfg.dataset.dir)
        raw = inference.predict(
            FLAGS.workdir, tfrecord.list_shards(cfg.dataset.dir, split), feature_dim=meta["feature_dim"],
            grid_size=None if cfg.localize.all_snippets else cfg.localize.num_snippets,
            batch_size=cfg.localize.batch_size,
        )
        if FLAGS.save_raw:
            inference.save_raw(FLAGS.save_raw, raw)
        out = FLAGS.out or os.path.join(FLAGS.workdir, "detections.json")
    results = inference.localize_raw(raw, streams=FLAGS.streams, **_localize_params(cfg))
    inference.write_results(results, out)
    print(f"wrote detections for {len(results['results'])} videos to {out}")
    return 0


def cmd_evaluate(argv):
    from stpn_tf import evaluate

    _require(ground_truth=FLAGS.ground_truth, predictions=FLAGS.predictions)
    thresholds = [float(t) for t in FLAGS.tiou_thresholds] if FLAGS.tiou_thresholds else None
    evaluate.run_evaluate(
        ground_truth=FLAGS.ground_truth, predictions=FLAGS.predictions, subset=FLAGS.subset,
        protocol=FLAGS.protocol or _config().evaluate.protocol, tiou_thresholds=thresholds,
        unknown_labels_as_fp=FLAGS.unknown_labels_as_fp, json_out=FLAGS.json_out, det_txt=FLAGS.det_txt,
    )
    return 0


def cmd_demo(argv):
    from stpn_tf import demo

    _require(workdir=FLAGS.workdir)
    cfg = _config()
    _write_config(FLAGS.workdir, "demo")
    demo.run_demo(
        workdir=FLAGS.workdir, synthetic=cfg.synthetic.to_dict(), model=cfg.model.to_dict(),
        train=cfg.train.to_dict(), localize=cfg.localize.to_dict(), evaluate=cfg.evaluate.to_dict(),
    )
    return 0


HANDLERS = {"demo": cmd_demo, "train": cmd_train, "localize": cmd_localize, "evaluate": cmd_evaluate}


def main(argv):
    if len(argv) < 2 or argv[1] not in COMMANDS:
        print(f"usage: stpn <command> [flags]; commands: {', '.join(COMMANDS)} (stpn --helpfull for flags)",
              file=sys.stderr)
        return 2
    command = argv[1]
    handler = HANDLERS.get(command)
    if handler is None:
        print(f"stpn {command}: not available in this build", file=sys.stderr)
        return 2
    try:
        return handler(argv[2:])
    except StpnError as e:
        print(f"stpn {command}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2


def run():
    """Console-script entry point."""
    argv = list(sys.argv)
    # `stpn demo` without --config uses the small demo config.
    if len(argv) > 1 and argv[1] == "demo" and not any(a == "--config" or a.startswith("--config=") for a in argv):
        argv.insert(2, f"--config={os.path.join(CONFIG_DIR, 'demo.py')}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app.run(main, argv=argv)


if __name__ == "__main__":
    run()
