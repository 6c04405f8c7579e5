"""`stpn report`: a self-contained HTML page of a run (or a seed study) with its figures embedded."""

from __future__ import annotations

import json
import os

from absl import flags

from stpn_tf.cli.common import Command, Parsed, define_workdir, require
from stpn_tf.core.errors import StpnError


def define(fv: flags.FlagValues) -> None:
    define_workdir(fv, "training work directory with raw_test.npz (stpn demo, or stpn localize --save_raw), or a "
                       "study directory (stpn study)")
    flags.DEFINE_string("out", None, "HTML file to write (default <workdir>/report.html)", flag_values=fv)
    flags.DEFINE_bool("unknown_labels_as_fp", False, "count predicted labels absent from the test ground truth as "
                      "false positives (instead of an error)", flag_values=fv)


def run(p: Parsed) -> int:
    from stpn_tf.workflows import report
    from stpn_tf.cli import settings
    from stpn_tf.artifacts.dataset_dir import ground_truth_path
    from stpn_tf.artifacts.workdir import WorkDir

    require(p.flags, "workdir")
    if not os.path.isdir(p.workdir):
        raise StpnError(f"{p.workdir}: no such directory")
    cfg = p.config
    split = cfg.dataset.test_split
    sections, run_dir = [], p.workdir
    study_path = os.path.join(p.workdir, "study.json")
    if os.path.exists(study_path):
        try:
            with open(study_path) as f:
                study = json.load(f)
            run_dir = os.path.join(p.workdir, f"seed_{study['seeds'][0]}")
        except (ValueError, KeyError, IndexError) as error:
            raise StpnError(f"{study_path}: not a study written by `stpn study` ({error})") from None
        sections.append(report.study_section(study))
    record = WorkDir(run_dir).read_record()
    dataset_dir = (record.dataset_dir if record and record.dataset_dir else None) or cfg.dataset.dir
    if not dataset_dir:
        raise StpnError(f"{run_dir}: records no dataset; pass --config.dataset.dir")
    raw_path = os.path.join(run_dir, f"raw_{split}.npz")
    report.check_inputs(raw_path, [st for st in WorkDir(run_dir).trained_streams() if st != "joint"] or ["rgb", "flow"])
    sections += report.run_sections(run_dir, raw_path=raw_path, truth_path=ground_truth_path(dataset_dir),
                                    subset=split, default=settings.localizer_config(cfg),
                                    unknown_labels_as_fp=p.unknown_labels_as_fp,
                                    objective=settings.tuning_objective(cfg))
    out = p.out or os.path.join(p.workdir, "report.html")
    count = report.write_html(out, report.page_title(p.workdir), sections)
    print(f"wrote {out} ({count} figures)")
    return 0


COMMAND = Command(
    name="report", purpose="one self-contained HTML page of a run or a seed study (figures embedded)",
    usage="stpn report --workdir=W|S [--out=W/report.html]",
    define=define, run=run, config_sections=("dataset", "localize", "evaluate", "tune"),
    details="A run's page: mAP against tIoU per setting (paper default, and tune.json's when stpn tune ran),\n"
            "per-class AP and precision-recall at tIoU 0.5, timelines of the best and the worst test videos.")
