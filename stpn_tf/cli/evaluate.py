"""`stpn evaluate`: mAP of a detections file with the ActivityNet and/or THUMOS14-toolkit protocol."""

from __future__ import annotations

import os

from absl import flags

from stpn_tf.cli.common import Command, Parsed, define_workdir, require


def define(fv: flags.FlagValues) -> None:
    define_workdir(fv, "training work directory: evaluates its detections.json against its dataset's ground truth "
                   "and test split (the defaults of --predictions, --ground_truth and --subset)", required=False)
    flags.DEFINE_string("ground_truth", None, "ground truth: ActivityNet / BaS-Net JSON, a dataset's "
                        "ground_truth.json, or the THUMOS14 toolkit txt folder (e.g. "
                        "stpn:thumos14/th14_evalkit_groundtruth) (required)", flag_values=fv)
    flags.DEFINE_string("predictions", None, "detections: ActivityNet results JSON or toolkit result txt (required)",
                        flag_values=fv)
    flags.DEFINE_string("subset", None, "ground-truth subset (test, validation / val, train; a toolkit folder's "
                        "default is test)", flag_values=fv)
    flags.DEFINE_enum("protocol", None, ["activitynet", "th14kit", "both"], "protocol (default "
                      "config.evaluate.protocol)", flag_values=fv)
    flags.DEFINE_string("tiou_thresholds", None, "tIoU thresholds: thumos (0.1..0.9), activitynet (0.5..0.95) or a "
                        "list like 0.1,0.3,0.5 (default: by the number of classes)", flag_values=fv)
    flags.DEFINE_bool("unknown_labels_as_fp", False, "count predictions with labels absent from the ground truth as "
                      "false positives instead of failing", flag_values=fv)
    flags.DEFINE_string("json_out", None, "also write the results as JSON here", flag_values=fv)
    flags.DEFINE_string("det_txt", None, "UCF101 class ids for toolkit result txt (default: det.txt of a toolkit "
                        "ground-truth folder)", flag_values=fv)


def run(p: Parsed) -> int:
    from stpn_tf.evaluation import run_evaluate
    from stpn_tf.evaluation.thresholds import parse_tiou_thresholds

    ground_truth, predictions, subset = p.path("ground_truth"), p.path("predictions"), p.subset
    if p.workdir:
        ground_truth, predictions, subset = _workdir_defaults(p, ground_truth, predictions, subset)
    else:
        require(p.flags, "ground_truth", "predictions")
    run_evaluate(ground_truth=ground_truth, predictions=predictions, subset=subset,
                 protocol=p.protocol or p.config.evaluate.protocol,
                 tiou_thresholds=parse_tiou_thresholds(p.tiou_thresholds), unknown_labels_as_fp=p.unknown_labels_as_fp,
                 json_out=p.json_out, det_txt=p.path("det_txt"))
    return 0


def _workdir_defaults(p: Parsed, ground_truth, predictions, subset):
    """--ground_truth, --predictions and --subset, the work directory's where not given."""
    from stpn_tf.artifacts.dataset_dir import ground_truth_path
    from stpn_tf.artifacts.workdir import WorkDir
    from stpn_tf.core.errors import StpnError

    work = WorkDir(p.path("workdir")).require()
    if predictions is None:
        predictions = work.detections_path
        if not os.path.isfile(predictions):
            raise StpnError(f"{predictions}: not found (run `stpn localize --workdir={p.workdir}` first, or pass "
                            "--predictions)")
    if ground_truth is None:
        if not p.config.dataset.dir:
            raise StpnError(f"{p.workdir}: its config names no dataset (config.dataset.dir); pass --ground_truth")
        ground_truth = ground_truth_path(p.config.dataset.dir)
    return ground_truth, predictions, subset or p.config.dataset.test_split


COMMAND = Command(
    name="evaluate", purpose="mAP of detections with the ActivityNet and THUMOS14-toolkit protocols",
    usage="stpn evaluate --ground_truth=G --predictions=P [--protocol=activitynet|th14kit|both] [--json_out=F]\n"
          "       stpn evaluate --workdir=W   (W/detections.json against W's dataset)",
    define=define, run=run, config_sections=("evaluate",), tensorflow=False,  # numpy only: answers at once
    details="The two protocols differ (tIoU >= t with all-point AP vs overlap > t with 11-point AP and\n"
            "Ambiguous segments ignored); README.md explains both. Use the toolkit folder as ground truth for\n"
            "th14kit: it carries the Ambiguous segments.")
