"""`stpn localize`: detections from a training work directory, an export, saved raw outputs, or raw videos.

Every path runs the composed graph (stpn_tf.inference: test grid -> streams -> Localizer) or, on saved raw
outputs, the same Localizer.
"""

from __future__ import annotations

import os
import sys

from absl import flags, logging

from stpn_tf.core import resources
from stpn_tf.cli.common import Command, Parsed, batch_size, check_dataset_dir, define_workdir, require
from stpn_tf.core.errors import StpnError


def define(fv: flags.FlagValues) -> None:
    define_workdir(fv, "training work directory (its recorded dataset and config are used) or `stpn export` "
                       "directory", required=False)
    flags.DEFINE_string("out", None, "detections JSON to write (default <workdir>/detections.json, with --raw=R.npz "
                        "R.detections.json beside it; required with an export); with videos: the output directory "
                        "(required)", flag_values=fv)
    flags.DEFINE_string("split", None, "dataset split to localize (default config.dataset.test_split)",
                        flag_values=fv)
    flags.DEFINE_list("streams", ["rgb", "flow"], "streams: rgb,flow (two-stream, eq. 7) or one of rgb, flow, "
                      "joint", flag_values=fv)
    flags.DEFINE_string("save_raw", None, "also save the raw outputs (attention, T-CAM, probabilities) to this "
                        ".npz, to localize again with other settings without the models", flag_values=fv)
    flags.DEFINE_string("raw", None, "localize saved raw outputs (from --save_raw) instead of running the models",
                        flag_values=fv)
    flags.DEFINE_enum("raw_engine", "numpy", ["numpy", "graph"], "--raw: numpy (stpn_tf.localize.numpy_engine, no "
                      "TensorFlow: no start-up or compile, the Localizer's detections) or graph (the compiled "
                      "Localizer: faster when many (video, class) pairs pass, e.g. ActivityNet size)",
                      flag_values=fv)
    flags.DEFINE_bool("sweep", False, "print the mAP of every config.sweep class / T-CAM threshold pair instead of "
                      "writing detections (tune on held-out data: settings chosen on the test split overstate "
                      "test mAP)", flag_values=fv)
    flags.DEFINE_string("ground_truth", None, "--sweep: ground truth (default the dataset's ground_truth.json, "
                        "with --raw the one it records); "
                        "with videos: segments drawn in the figures", flag_values=fv)
    flags.DEFINE_string("subset", None, "subset of --ground_truth (default the localized split, with --raw the one "
                        "it records)", flag_values=fv)
    flags.DEFINE_enum("protocol", None, ["activitynet", "th14kit"], "--sweep: protocol (default activitynet, or "
                      "config.evaluate.protocol when it is one)", flag_values=fv)
    flags.DEFINE_bool("unknown_labels_as_fp", False, "--sweep: count predicted labels absent from the ground truth "
                      "as false positives", flag_values=fv)
    flags.DEFINE_string("th14_txt", None, "also write THUMOS14 toolkit result txt to this file", flag_values=fv)
    flags.DEFINE_string("det_txt", None, "UCF101 class ids for --th14_txt (default the shipped THUMOS14 det.txt)",
                        flag_values=fv)


def check(p: Parsed) -> None:
    """Flags, files and settings, before TensorFlow loads."""
    from stpn_tf.artifacts.export_dir import is_export_dir

    if p.flags["raw_engine"].present and (not p.raw or p.sweep):
        raise StpnError("--raw_engine applies to --raw without --sweep (a sweep and the models run the compiled "
                        "Localizer)")
    if int(p.config.localize.batch_size) < 0:
        raise StpnError(f"--config.localize.batch_size={p.config.localize.batch_size}: videos per call must be >= 0 "
                        "(0: from the data)")
    if p.args:
        require(p.flags, "workdir", "out")
        if is_export_dir(p.workdir):
            _refuse_export_overrides(p)
        return
    if p.raw:
        if not os.path.isfile(p.path("raw")):
            raise StpnError(f"{p.raw}: raw outputs not found")
        return
    require(p.flags, "workdir")
    if not os.path.isdir(p.workdir):
        raise StpnError(f"{p.workdir}: no such work directory")
    if is_export_dir(p.workdir):
        if p.save_raw or p.sweep or p.flags["streams"].present:
            raise StpnError(f"{p.workdir} is an export (fixed streams and localization settings): --save_raw, "
                            "--sweep and --streams need the training work directory")
        if not p.out:
            raise StpnError(f"{p.workdir} is an export directory: pass --out=FILE for the detections (outputs never "
                            "go into an export)")
        _refuse_export_overrides(p)
    check_dataset_dir(_dataset_dir(p))


# Settings of config.localize that only batch the work (applied with an export too); every other one is part
# of the exported graph.
_RUNTIME_SETTINGS = ("batch_size",)


def _refuse_export_overrides(p: Parsed) -> None:
    """A `--config.localize.K=V` that differs from what the export `p.workdir` was built with: one-line error.

    An export's localization settings are constants of its graph; applying others needs a new export.
    """
    from stpn_tf.artifacts.export_dir import read_export_info

    info = read_export_info(p.workdir)
    recorded = dict(info.localize, all_snippets=info.grid_length is None, num_snippets=info.grid_length)
    for key in p.overrides:
        section, _, name = key.partition(".")
        if section != "localize" or name in _RUNTIME_SETTINGS:
            continue
        given = p.config.localize[name]
        if name in recorded and _plain(recorded[name]) == _plain(given):
            continue
        shown = f"--config.localize.{name}={_flag_value(given)}"
        was = f"was exported with {recorded[name]!r}" if name in recorded else "does not take it"
        raise StpnError(f"{p.workdir} is an export and {was}; its localization settings are fixed in its graph, so "
                        f"{shown} cannot apply: re-export with `stpn export --workdir={info.source or 'W'} --out=NEW "
                        f"{shown}`, or localize the training work directory")


def _plain(value):
    """A config or JSON value in one comparable form (tuples and lists alike, ints as floats)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return value


def _flag_value(value) -> str:
    if isinstance(value, (list, tuple)):
        return "(" + ",".join(str(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return str(value)


def run(p: Parsed) -> int:
    from stpn_tf.artifacts.export_dir import is_export_dir

    check(p)  # again: `run` is also called without the entry point's check
    if p.args:
        return _videos(p)
    if p.raw:
        return _from_raw(p)
    if is_export_dir(p.workdir):
        return _from_export(p)
    return _from_workdir(p)


def _check_output(path: str) -> None:
    from stpn_tf.artifacts.export_dir import is_export_dir

    parent = os.path.dirname(os.path.abspath(path))
    while parent and parent != os.path.dirname(parent):
        if is_export_dir(parent):
            raise StpnError(f"{path}: inside the export {parent}; outputs never go into an export, choose another "
                            "--out")
        parent = os.path.dirname(parent)


def _batch_size(p: Parsed) -> int:
    """Videos per call (common.batch_size: a work directory's recorded value gives way to the data's)."""
    return batch_size(p, "localize.batch_size")


def _dataset_dir(p: Parsed) -> str:
    return p.config.dataset.dir


def _dataset(p: Parsed, classes, feature_dim: int | None, source: str):
    """The split to localize (--split, else the config's test split), checked against the model."""
    from stpn_tf.workflows.runs import dataset_split

    return dataset_split(_dataset_dir(p), p.split or p.config.dataset.test_split, classes=classes,
                         feature_dim=feature_dim, source=source)


def _progress(total: int):
    def report(done: int) -> None:
        logging.info("localize: %d/%d videos", done, total)
    return report


def _write(p: Parsed, results, out: str) -> None:
    from stpn_tf.artifacts.results import write_results

    write_results(out, results)
    print(f"wrote detections for {len(results['results'])} videos to {out}")
    _toolkit_txt(p, results)


def _streamed(p: Parsed, out: str, predict_into):
    """Runs `predict_into(sink)`, whose detections go to `out` as they come (atomically: the file appears
    when all are written), so memory stays flat in the number of videos; returns what it returns."""
    from stpn_tf.artifacts.results import ResultsWriter

    with ResultsWriter(out) as writer:
        returned = predict_into(writer.add)
    print(f"wrote detections for {writer.num_videos} videos to {out}")
    if p.th14_txt:  # read back: the toolkit txt needs them all (THUMOS14-sized)
        from stpn_tf.artifacts.results import read_results

        _toolkit_txt(p, read_results(out))
    return returned


def _toolkit_txt(p: Parsed, results) -> None:
    if p.th14_txt:
        from stpn_tf.artifacts.annotations import read_ucf101_ids
        from stpn_tf.evaluation.formats import write_toolkit_results

        det_txt = p.path("det_txt") or resources.resource_path(resources.THUMOS14_DET_TXT)
        n = write_toolkit_results(results, p.path("th14_txt"), read_ucf101_ids(det_txt))
        print(f"wrote {n} toolkit result lines to {p.th14_txt}")


def _from_export(p: Parsed) -> int:
    from stpn_tf.inference import predict
    from stpn_tf.inference.runner import load_export

    _check_output(p.out)
    model = load_export(p.workdir)
    split = _dataset(p, model.classes, model.feature_dim, p.workdir)
    _streamed(p, p.out, lambda sink: predict.predict_records(
        model, split.shards, batch_size=_batch_size(p), progress=_progress(split.num_videos),
        keep_raw=False, sink=sink))
    return 0


def _from_workdir(p: Parsed) -> int:
    from stpn_tf.cli import settings
    from stpn_tf.inference import predict
    from stpn_tf.artifacts import raw_outputs
    from stpn_tf.artifacts.dataset_dir import ground_truth_path
    from stpn_tf.artifacts.ground_truth import load_ground_truth
    from stpn_tf.artifacts.workdir import WorkDir
    from stpn_tf.inference.runner import load_serving_model

    cfg = p.config
    work = WorkDir(p.workdir).require()
    record = work.read_record()
    split = _dataset(p, work.classes(), (record.feature_dim if record else None) or None, p.workdir)
    out = p.out or work.detections_path
    _check_output(out)
    grid, localizer_config = settings.grid_config(cfg), settings.localizer_config(cfg)
    model = load_serving_model(p.workdir, grid=grid, localizer_config=localizer_config, streams=p.streams,
                               feature_dim=split.feature_dim)
    ground_truth = None
    if p.sweep:  # read before the models run: a wrong path fails at once
        ground_truth = load_ground_truth(p.path("ground_truth") or ground_truth_path(split.dataset_dir),
                                         p.subset or split.split)
    # The raw outputs only when they are saved or swept: they grow with the split. The detections are
    # written as they come (a sweep writes none).
    def predict_into(sink):
        return predict.predict_records(model, split.shards, batch_size=_batch_size(p),
                                       progress=_progress(split.num_videos), keep_raw=bool(p.save_raw or p.sweep),
                                       sink=sink)

    _, raw = predict_into(lambda detections: None) if p.sweep else _streamed(p, out, predict_into)
    if p.save_raw:  # with what a sweep over it defaults to: the split and its ground truth
        raw_outputs.save_raw(p.path("save_raw"), raw, split=split.split,
                             ground_truth=ground_truth_path(split.dataset_dir))
        print(f"wrote raw outputs of {len(raw['video_id'])} videos to {p.save_raw}")
    work.write_config("localize", settings.as_json(cfg))
    if p.sweep:
        return _sweep(p, raw, ground_truth, os.path.dirname(os.path.abspath(out)))
    if not p.out and split.split == cfg.dataset.test_split:  # what `stpn evaluate --workdir` reads
        print(f"mAP of these detections: stpn evaluate --workdir={p.workdir}")
    return 0


def _from_raw(p: Parsed) -> int:
    from stpn_tf.cli import settings
    from stpn_tf.artifacts import raw_outputs

    raw = raw_outputs.load_raw(p.path("raw"))
    if p.sweep:
        from stpn_tf.artifacts.ground_truth import load_ground_truth

        split, recorded = raw_outputs.raw_source(raw, p.path("raw"))
        ground_truth_file = p.path("ground_truth") or recorded
        if not ground_truth_file:
            raise StpnError(f"{p.raw} does not record its ground truth (saved by an older version): pass "
                            "--ground_truth=G (and --subset)")
        ground_truth = load_ground_truth(ground_truth_file, p.subset or split)
        return _sweep(p, raw, ground_truth, os.path.dirname(os.path.abspath(p.path("raw"))))
    out = p.out or raw_detections_path(p.path("raw"))
    _check_output(out)
    config = settings.localizer_config(p.config)
    if _numpy_raw(p):
        from stpn_tf.localize.numpy_engine import localize_raw_outputs

        try:
            results = localize_raw_outputs(raw, config, streams=p.streams,
                                           progress=_progress(len(raw["video_id"])))
        except StpnError as err:
            raise StpnError(f"{p.raw}: {err}") from None
    else:
        from stpn_tf.inference import predict
        from stpn_tf.localize.localizer import Localizer

        results = predict.localize_raw(raw, Localizer(config), streams=p.streams, batch_size=_batch_size(p))
    _write(p, results, out)
    return 0


def _numpy_raw(p: Parsed) -> bool:
    """Saved raw outputs localized by the numpy engine (no TensorFlow): --raw without --sweep, the default engine."""
    return bool(p.raw) and not p.sweep and p.flags["raw_engine"].value == "numpy"


def raw_detections_path(raw: str) -> str:
    """Where `--raw=R.npz` writes without --out: beside it, named after it (R.detections.json), so the
    detections of the models' own settings (W/detections.json) are never replaced by a re-localization."""
    stem = raw[:-4] if raw.endswith(".npz") else raw
    return stem + ".detections.json"


def _sweep(p: Parsed, raw, ground_truth, out_dir: str) -> int:
    from stpn_tf.cli import settings
    from stpn_tf.tuning.sweep import best_setting, sweep_thresholds
    from stpn_tf.core.atomic import atomic_write_json

    cfg = p.config
    protocol = p.protocol or (cfg.evaluate.protocol if cfg.evaluate.protocol in ("activitynet", "th14kit")
                              else "activitynet")
    thresholds = settings.evaluation_thresholds(cfg)
    print(f"sweep ({protocol} protocol, mAP % averaged over tIoU {thresholds[0]:g}..{thresholds[-1]:g}; the "
          f"ground truth is {len(ground_truth)} videos: tune on data other than your test split)")
    rows = sweep_thresholds(raw, ground_truth, base=settings.localizer_config(cfg),
                            class_thresholds=cfg.sweep.class_thresholds, tcam_thresholds=cfg.sweep.tcam_thresholds,
                            streams=p.streams, protocol=protocol, tiou_thresholds=thresholds,
                            unknown_labels_as_fp=p.unknown_labels_as_fp, batch_size=_batch_size(p),
                            out=sys.stdout)
    best = best_setting(rows)
    print(f"best: class_threshold={best['class_threshold']:g} tcam_threshold={best['tcam_threshold']:g} "
          f"(avg mAP {100 * best['average_mAP']:.2f})")
    path = os.path.join(out_dir, "sweep.json")
    atomic_write_json(path, {"protocol": protocol, "rows": rows, "best": best})
    print(f"wrote the sweep table to {path}")
    return 0


def _videos(p: Parsed) -> int:
    from stpn_tf.cli import settings
    from stpn_tf.workflows.localize_videos import localize_videos
    from stpn_tf.artifacts.export_dir import is_export_dir

    _check_output(os.path.join(p.out, "detections.json"))
    cfg = p.config
    export = is_export_dir(p.workdir)
    return localize_videos(
        videos=p.args, model_path=p.workdir, out_dir=p.out, models=settings.i3d_models(cfg),
        extract=settings.extract_config(cfg), grid=None if export else settings.grid_config(cfg),
        localizer_config=None if export else settings.localizer_config(cfg), ground_truth=p.path("ground_truth"),
        ground_truth_subset=p.subset, streams=p.streams if p.flags["streams"].present and not export else None)


COMMAND = Command(
    name="localize", purpose="detections from a training work directory, an export, saved raw outputs, or videos",
    usage="stpn localize --workdir=W [--out=F] [--save_raw=R.npz] [--th14_txt=T]   (a training work directory)\n"
          "       stpn localize --workdir=E --out=F                                 (an `stpn export` directory)\n"
          "       stpn localize --raw=R.npz [--out=F | --sweep [--ground_truth=G]]  (saved raw outputs)\n"
          "       stpn localize VIDEO... --workdir=W|E --out=DIR                    (videos: extract, localize, draw)",
    define=define, run=run, check=check, config_sections=("dataset", "localize", "sweep", "evaluate", "extract"),
    details="Localization settings come from config.localize; an export carries its own (a differing\n"
            "--config.localize.KEY is refused with the re-export that applies it). Videos: the RGB I3D is\n"
            "the built-in Kinetics-400 one unless --config.extract.rgb_model=M; a two-stream model also needs\n"
            "--config.extract.flow_model=M (stpn i3d convert; docs/extract.md). The extracted features stay in\n"
            "<out>/features/videos/ and a rerun reuses them. --raw without --sweep localizes in numpy without\n"
            "TensorFlow (--raw_engine=numpy, the default): the Localizer's detections (the same bytes but\n"
            "where candidates tie exactly), in seconds instead of TensorFlow's start-up and a compile.",
    tensorflow=lambda p: not _numpy_raw(p))
