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

# No default here: a default would be loaded at import time, before run() knows the command; run() inserts
# configs/thumos14.py (configs/demo.py for `stpn demo`) when --config is not given.
config_flags.DEFINE_config_file(
    "config", None, "Config file (ml_collections); default configs/thumos14.py, or configs/demo.py for "
    "`stpn demo`. Override any value with --config.a.b=v.", lock_config=True)
flags.DEFINE_string("workdir", None, "Work directory: training outputs, logs, detections.")
flags.DEFINE_enum("stream", None, ["rgb", "flow", "joint"], "train: which stream to train (joint: one model "
                  "on the concatenated RGB and flow features, an extra beside the paper's two streams).")
# localize
flags.DEFINE_string("out", None, "localize: detections JSON (default <workdir>/detections.json); "
                    "export: SavedModel directory.")
flags.DEFINE_string("split", None, "localize: dataset split (default config.dataset.test_split).")
flags.DEFINE_string("save_raw", None, "localize: also save raw outputs (attention, T-CAM, probabilities) "
                    "to this .npz so thresholds can be swept without rerunning the models.")
flags.DEFINE_string("raw", None, "localize: localize saved raw outputs instead of running the models.")
flags.DEFINE_list("streams", ["rgb", "flow"], "localize: streams to use (rgb,flow / rgb / flow / joint).")
flags.DEFINE_bool("sweep", False, "localize: sweep class and T-CAM thresholds over the raw outputs and print "
                  "the mAP of each setting (needs --ground_truth). Tune on held-out data: settings chosen on "
                  "the test split overstate test mAP.")
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
# build-dataset
flags.DEFINE_string("layout", None, "build-dataset: thumos14_reduced | thumos14_npy | thumos14_h5 | "
                    "activitynet_h5 | activitynet_npy.")
flags.DEFINE_string("annotations", None, "build-dataset: annotation JSON, Thumos14reduced folder or toolkit folder.")
flags.DEFINE_string("features", None, "build-dataset: feature file or folder of the release.")
flags.DEFINE_string("dataset_name", None, "build-dataset: name stored in dataset.json.")
flags.DEFINE_bool("allow_pickle", False, "build-dataset: allow loading numpy object arrays (Thumos14reduced). "
                  "Pickle can run arbitrary code: only use it on files you trust.")
flags.DEFINE_bool("strict", False, "build-dataset: fail on any skipped video instead of counting it.")
flags.DEFINE_integer("num_shards", None, "build-dataset: shards per split.")
flags.DEFINE_list("exclude_videos", [], "build-dataset: video ids to leave out.")
flags.DEFINE_bool("thumos14_210", False, "build-dataset: the 210-video THUMOS14 test set (without 270, 1496).")
flags.DEFINE_integer("feature_dim", None, "build-dataset: expected feature size per stream.")
flags.DEFINE_string("durations", None, "build-dataset: Thumos14reduced folder to take durations from.")
flags.DEFINE_string("classes", None, "build-dataset: class list file.")
flags.DEFINE_float("fps", None, "build-dataset: frame rate of the features (default per layout).")
flags.DEFINE_integer("stride_frames", None, "build-dataset: frames per snippet (default per layout).")
flags.DEFINE_enum("segments_outside", "clip", ["clip", "keep"], "build-dataset: segments past the duration.")
flags.DEFINE_bool("keep_unlabeled", False, "build-dataset: keep videos without labels.")
flags.DEFINE_enum("snippet_time", "fixed", ["fixed", "duration"], "build-dataset: 'fixed' = stride_frames / fps "
                  "seconds per snippet; 'duration' = video duration / snippets (releases resampled to a fixed "
                  "number of snippets per video, common for ActivityNet).")
# extract
flags.DEFINE_bool("overwrite", False, "extract: recompute videos that already have features; export: replace "
                  "an existing export directory.")
FLAGS = flags.FLAGS


def _config():
    return FLAGS.config


def _write_config(workdir: str, name: str) -> None:
    """Keeps the resolved config of every run in the work directory."""
    from stpn_tf.data.annotations import atomic_write_text

    os.makedirs(workdir, exist_ok=True)
    atomic_write_text(os.path.join(workdir, f"config.{name}.json"), _config().to_json_best_effort(indent=2))


def _dataset_dir(cfg) -> str:
    if not cfg.dataset.dir:
        raise StpnError("config.dataset.dir is empty: pass --config.dataset.dir=<directory from stpn build-dataset>")
    return cfg.dataset.dir


def _require(**values):
    missing = [f"--{k}" for k, v in values.items() if not v]
    if missing:
        raise StpnError(f"missing required flag(s): {', '.join(missing)}")


def cmd_train(argv):
    from stpn_tf import train

    from stpn_tf.data import tfrecord
    from stpn_tf.model.stpn import stream_model_path

    _require(workdir=FLAGS.workdir, stream=FLAGS.stream)
    cfg = _config()
    tfrecord.read_dataset_metadata(_dataset_dir(cfg))  # fail before writing anything
    if os.path.exists(stream_model_path(FLAGS.workdir, FLAGS.stream)):
        print(f"{stream_model_path(FLAGS.workdir, FLAGS.stream)} exists: the {FLAGS.stream} stream is already "
              "trained (delete it, or use another --workdir, to train again with other settings)")
        return 0
    _write_config(FLAGS.workdir, f"train.{FLAGS.stream}")
    train.run_train(
        dataset_dir=cfg.dataset.dir, workdir=FLAGS.workdir, stream=FLAGS.stream,
        train_split=cfg.dataset.train_split, **cfg.model.to_dict(), **cfg.train.to_dict(),
    )
    return 0


def _localize_params(cfg) -> dict:
    from stpn_tf.inference import localize_params

    return localize_params(cfg.localize.to_dict())


def cmd_localize(argv):
    from stpn_tf import inference
    from stpn_tf.data import tfrecord

    cfg = _config()
    if argv:  # stpn localize VIDEO...: extraction + trained streams + localization + figures
        from stpn_tf.extract.localize_videos import localize_videos

        _require(workdir=FLAGS.workdir, out=FLAGS.out)
        return localize_videos(
            videos=argv, workdir=FLAGS.workdir, out_dir=FLAGS.out, ground_truth=FLAGS.ground_truth,
            ground_truth_subset=FLAGS.subset, localize_params=_localize_params(cfg),
            grid_size=None if cfg.localize.all_snippets else cfg.localize.num_snippets, **_extract_kwargs(cfg),
        )
    if FLAGS.workdir and inference.is_export_dir(FLAGS.workdir):
        # An export carries its own localization settings and both streams; it reads the TFRecords directly.
        if FLAGS.save_raw or FLAGS.sweep or FLAGS.raw or FLAGS.streams != ["rgb", "flow"]:
            raise StpnError(f"{FLAGS.workdir} is an export (fixed streams and localization settings): --save_raw, "
                            "--raw, --sweep and --streams need the training work directory")
        split = FLAGS.split or cfg.dataset.test_split
        results = inference.localize_with_export(
            FLAGS.workdir, tfrecord.list_shards(_dataset_dir(cfg), split), batch_size=cfg.localize.batch_size)
        out = FLAGS.out or os.path.join(FLAGS.workdir, "detections.json")
        return _write_detections(results, out)
    if FLAGS.raw:
        raw = inference.load_raw(FLAGS.raw)
        out = FLAGS.out or os.path.join(os.path.dirname(os.path.abspath(FLAGS.raw)), "detections.json")
    else:
        from stpn_tf.model.stpn import load_classes

        _require(workdir=FLAGS.workdir)
        split = FLAGS.split or cfg.dataset.test_split
        meta = tfrecord.read_dataset_metadata(_dataset_dir(cfg))
        if load_classes(FLAGS.workdir) != meta["classes"]:
            raise StpnError(f"{FLAGS.workdir} was trained on other classes than {cfg.dataset.dir} holds: pass the "
                            "dataset it was trained on with --config.dataset.dir (see its config.train.*.json)")
        _write_config(FLAGS.workdir, "localize")
        raw = inference.predict(
            FLAGS.workdir, tfrecord.list_shards(cfg.dataset.dir, split), feature_dim=meta["feature_dim"],
            grid_size=None if cfg.localize.all_snippets else cfg.localize.num_snippets,
            batch_size=cfg.localize.batch_size, streams=FLAGS.streams,
        )
        if FLAGS.save_raw:
            inference.save_raw(FLAGS.save_raw, raw)
        out = FLAGS.out or os.path.join(FLAGS.workdir, "detections.json")
    if FLAGS.sweep:
        return _sweep(raw, cfg)
    return _write_detections(inference.localize_raw(raw, streams=FLAGS.streams, **_localize_params(cfg)), out)


def _write_detections(results, out: str) -> int:
    """Writes the detections JSON and, with --th14_txt, the THUMOS14 toolkit result txt."""
    from stpn_tf import inference

    inference.write_results(results, out)
    print(f"wrote detections for {len(results['results'])} videos to {out}")
    if FLAGS.th14_txt:
        from stpn_tf import evaluate

        det_txt = FLAGS.det_txt or os.path.join(CONFIG_DIR, "..", "data", "thumos14", "th14_evalkit_groundtruth",
                                                "det.txt")
        from stpn_tf.data.annotations import read_ucf101_ids

        n = evaluate.write_toolkit_results(results, FLAGS.th14_txt, read_ucf101_ids(det_txt))
        print(f"wrote {n} toolkit result lines to {FLAGS.th14_txt}")
    return 0


def _sweep(raw, cfg) -> int:
    """Prints the mAP of every (class threshold, T-CAM threshold) pair on saved raw outputs."""
    import itertools

    from stpn_tf import evaluate, inference

    _require(ground_truth=FLAGS.ground_truth)
    ground_truth = evaluate.load_ground_truth(FLAGS.ground_truth, FLAGS.subset)
    protocol = FLAGS.protocol if FLAGS.protocol in ("activitynet", "th14kit") else "activitynet"
    thresholds = list(cfg.evaluate.tiou_thresholds)
    print(f"sweep ({protocol} protocol, mAP % averaged over tIoU {thresholds[0]:g}..{thresholds[-1]:g})")
    print(f"{'class_thr':>10}{'tcam_thr':>10}{'avg mAP':>10}{'mAP@0.5':>10}")
    best = None
    for ct, tt in itertools.product(cfg.sweep.class_thresholds, cfg.sweep.tcam_thresholds):
        params = {**_localize_params(cfg), "class_threshold": ct, "tcam_threshold": tt}
        results = inference.localize_raw(raw, streams=FLAGS.streams, **params)
        r = evaluate.evaluate_detections(ground_truth, results, protocol=protocol, tiou_thresholds=thresholds,
                                         unknown_labels_as_fp=FLAGS.unknown_labels_as_fp)
        at_half = dict(zip([round(t, 6) for t in r["tiou_thresholds"]], r["mAP"])).get(0.5, float("nan"))
        print(f"{ct:>10g}{tt:>10g}{100 * r['average_mAP']:>10.2f}{100 * at_half:>10.2f}")
        if best is None or r["average_mAP"] > best[0]:
            best = (r["average_mAP"], ct, tt)
    print(f"best: class_threshold={best[1]:g} tcam_threshold={best[2]:g} (avg mAP {100 * best[0]:.2f})")
    return 0


def cmd_evaluate(argv):
    from stpn_tf import evaluate

    _require(ground_truth=FLAGS.ground_truth, predictions=FLAGS.predictions)
    thresholds = evaluate.parse_tiou_thresholds(",".join(FLAGS.tiou_thresholds)) if FLAGS.tiou_thresholds else None
    evaluate.run_evaluate(
        ground_truth=FLAGS.ground_truth, predictions=FLAGS.predictions, subset=FLAGS.subset,
        protocol=FLAGS.protocol or _config().evaluate.protocol, tiou_thresholds=thresholds,
        unknown_labels_as_fp=FLAGS.unknown_labels_as_fp, json_out=FLAGS.json_out, det_txt=FLAGS.det_txt,
    )
    return 0


def cmd_export(argv):
    from stpn_tf import export

    from stpn_tf.model.stpn import load_classes

    _require(workdir=FLAGS.workdir, out=FLAGS.out)
    cfg = _config()
    load_classes(FLAGS.workdir)  # a training work directory, or a one-line error before anything is written
    _write_config(FLAGS.workdir, "export")
    return export.run_export(
        workdir=FLAGS.workdir, out=FLAGS.out, grid_length=cfg.localize.num_snippets,
        all_snippets=cfg.localize.all_snippets, overwrite=FLAGS.overwrite, **_localize_params(cfg),
    )


def cmd_build_dataset(argv):
    from stpn_tf.data import build

    _require(layout=FLAGS.layout, annotations=FLAGS.annotations, features=FLAGS.features, out=FLAGS.out)
    return build.run_build_dataset(
        layout=FLAGS.layout, annotations=FLAGS.annotations, features=FLAGS.features, out=FLAGS.out,
        dataset_name=FLAGS.dataset_name, allow_pickle=FLAGS.allow_pickle, strict=FLAGS.strict,
        num_shards=FLAGS.num_shards, exclude_videos=FLAGS.exclude_videos, thumos14_210=FLAGS.thumos14_210,
        feature_dim=FLAGS.feature_dim, durations=FLAGS.durations, classes=FLAGS.classes, fps=FLAGS.fps,
        stride_frames=FLAGS.stride_frames, segments_outside=FLAGS.segments_outside,
        keep_unlabeled=FLAGS.keep_unlabeled, snippet_time=FLAGS.snippet_time,
    )


def _extract_kwargs(cfg) -> dict:
    ex = cfg.extract
    if not ex.rgb_model or not ex.flow_model:
        raise StpnError("set --config.extract.rgb_model and --config.extract.flow_model to I3D SavedModel "
                        "directories or hub handles (see docs/extract.md)")
    keys = ("fps", "stride_frames", "rgb_model", "flow_model", "batch_size", "tvl1_scales", "tvl1_warps",
            "tvl1_inner_iterations", "tvl1_outer_iterations")
    return {**{k: ex[k] for k in keys}, "rgb_feature_tensor": ex.rgb_feature_tensor or None,
            "flow_feature_tensor": ex.flow_feature_tensor or None}


def cmd_extract(argv):
    from stpn_tf.extract import pipeline as extract_pipeline

    _require(out=FLAGS.out)
    if not argv:
        raise StpnError("give the videos (files or folders) to extract: stpn extract VIDEO... --out=DIR")
    cfg = _config()
    return extract_pipeline.run_extract(
        videos=argv, out=FLAGS.out, split=FLAGS.split or "test", short_side=cfg.extract.short_side,
        crop_size=cfg.extract.crop_size, overwrite=FLAGS.overwrite, **_extract_kwargs(cfg),
    )


def cmd_demo(argv):
    from stpn_tf import demo

    _require(workdir=FLAGS.workdir)
    cfg = _config()
    demo.run_demo(
        workdir=FLAGS.workdir, synthetic=cfg.synthetic.to_dict(), model=cfg.model.to_dict(),
        train=cfg.train.to_dict(), localize=cfg.localize.to_dict(), evaluate=cfg.evaluate.to_dict(),
    )
    _write_config(FLAGS.workdir, "demo")  # after the run: a refused rerun leaves the recorded config alone
    return 0


HANDLERS = {"demo": cmd_demo, "train": cmd_train, "localize": cmd_localize, "evaluate": cmd_evaluate,
            "build-dataset": cmd_build_dataset, "extract": cmd_extract, "export": cmd_export}


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
    except KeyboardInterrupt:
        hint = " (rerun the same command to resume from the last finished epoch)" if command == "train" else ""
        print(f"stpn {command}: interrupted{hint}", file=sys.stderr)
        return 130


def run():
    """Console-script entry point."""
    argv = list(sys.argv)
    if len(argv) > 1 and argv[1] in ("-h", "--help", "help"):
        print(__doc__.strip() + "\n\nAll flags: stpn --helpfull. Usage examples: README.md.")
        sys.exit(0)
    if not any(a in ("--config", "-config") or a.startswith(("--config=", "-config=")) for a in argv):
        default = "demo.py" if len(argv) > 1 and argv[1] == "demo" else "thumos14.py"
        argv.insert(min(2, len(argv)), f"--config={os.path.join(CONFIG_DIR, default)}")
    # ml_collections reads sys.argv for --config and its overrides: keep it in step with what is parsed.
    sys.argv = argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    prefix = f"stpn {argv[1]}" if len(argv) > 1 and not argv[1].startswith("-") else "stpn"
    app.define_help_flags()  # --help, --helpfull, as app.run would
    try:
        remaining = FLAGS(argv)
        FLAGS.config.to_dict()  # a config that failed to load raises only when used: do it here
    except (flags.Error, KeyError, AttributeError, OSError, ValueError, TypeError) as e:
        # Unknown flags, bad values, typos in --config.a.b keys, a missing config file: one line, exit 2.
        message = " ".join(str(e).replace("\\n", " ").split())
        print(f"{prefix}: error: {message}", file=sys.stderr)
        sys.exit(2)
    # Flags are parsed (parsing twice would define the --config.* override flags twice): app.run only sets
    # up logging and runs main.
    app.run(lambda _: main(remaining), argv=argv[:1])


if __name__ == "__main__":
    run()
