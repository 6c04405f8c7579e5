"""Localization options on a trained work directory: test mAP of each option alone, the successors' recipes,
and `stpn tune`'s choice, beside the paper default (the README's "Measured on the embedded data" table).

Needs a work directory with both streams trained (`stpn demo --workdir=work/demo`, about 2 minutes) and,
for the last row, `stpn tune --workdir=work/demo` (about 15 minutes). The models run once on the test
split per grid choice (the paper's 400-position grid; every snippet); the raw outputs are cached next to
the work directory's own as raw_test_options[_all_snippets].npz (deleted with --fresh). Every row is then
only localization and evaluation of the same outputs (stpn_tf.tuning.sweep.Sweeper), two-stream,
average mAP over tIoU 0.1:0.9, ActivityNet protocol / THUMOS14 toolkit.

Run: .venv/bin/python bench/options.py [--workdir=work/demo] [--fresh]
Ends with RESULT tuned_lift_activitynet=<tuned minus paper default, points> when tune.json exists.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from stpn_tf import configs  # noqa: E402
from stpn_tf.core.tables import averages_line  # noqa: E402
from stpn_tf.data.grid import GridConfig  # noqa: E402
from stpn_tf.tuning.sweep import PROPOSALS, Sweeper, batch_size_for, describe  # noqa: E402
from stpn_tf.artifacts.ground_truth import load_ground_truth  # noqa: E402
from stpn_tf.artifacts.workdir import WorkDir  # noqa: E402
from stpn_tf.localize.config import LocalizerConfig  # noqa: E402
from stpn_tf.workflows import runs  # noqa: E402

PAPER = LocalizerConfig()
# (row name, settings, every snippet?)
ROWS = [
    ("paper default", PAPER, False),
    ("soft-NMS (sigma 0.3)", PAPER.replace(nms="soft"), False),
    ("OIC", PAPER.replace(scoring="oic"), False),
    ("multi (0.05 .. 0.3)", PAPER.replace(**PROPOSALS["multi"]), False),
    ("multi + OIC", PAPER.replace(**PROPOSALS["multi"], scoring="oic"), False),
    ("multi_normalized (BaS-Net thresholds)", PAPER.replace(**PROPOSALS["multi_normalized"]), False),
    ("BaS-Net's recipe (multi_normalized + OIC, class 0.25, NMS 0.7)",
     PAPER.replace(**PROPOSALS["multi_normalized"], scoring="oic", class_threshold=0.25, nms_threshold=0.7), False),
    ("attention (9 levels)", PAPER.replace(**PROPOSALS["attention"]), False),
    ("attention + OIC + soft-NMS (DELU-like)", PAPER.replace(**PROPOSALS["attention"], scoring="oic", nms="soft"),
     False),
    ("proposals from flow only", PAPER.replace(proposal_streams="flow"), False),
    ("proposals from RGB only", PAPER.replace(proposal_streams="rgb"), False),
    ("every snippet (all_snippets)", PAPER, True),
]


def raw_outputs(workdir: str, dataset_dir: str, split: str, all_snippets: bool, feature_dim: int, fresh: bool):
    grid = GridConfig(all_snippets=all_snippets)
    path = runs.raw_file(workdir, split, grid, default_grid=GridConfig(), tag="options")
    raw, seconds = runs.cached_raw_outputs(path, workdir=workdir, dataset_dir=dataset_dir, split=split, grid=grid,
                                           feature_dim=feature_dim, batch_size=16, fresh=fresh)
    if seconds is not None:
        print(f"models on the {split} split ({'every snippet' if all_snippets else 'grid'}): "
              f"{seconds:.1f} s -> {path}", flush=True)
    return raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="work/demo")
    parser.add_argument("--fresh", action="store_true", help="rerun the models instead of the cached outputs")
    args = parser.parse_args()
    work = WorkDir(args.workdir).require()
    record = work.read_record()
    if record is None:
        sys.exit(f"{args.workdir}: no workdir.json (train both streams with stpn demo or stpn train first)")
    cfg = configs.load_config(record.config_name if record and record.config_name else "demo")
    dataset_dir = record.dataset_dir  # the dataset the streams were trained from
    truth = load_ground_truth(os.path.join(dataset_dir, "ground_truth.json"), cfg.dataset.test_split)
    feature_dim = record.feature_dim
    print(f"work directory {args.workdir}: D = {feature_dim}, {len(truth)} test videos; "
          f"two-stream average mAP 0.1:0.9, ActivityNet protocol / THUMOS14 toolkit", flush=True)
    sweepers = {}

    def sweeper(all_snippets: bool) -> Sweeper:
        if all_snippets not in sweepers:
            raw = raw_outputs(args.workdir, dataset_dir, cfg.dataset.test_split, all_snippets, feature_dim,
                              args.fresh)
            sweepers[all_snippets] = Sweeper(raw, truth, protocols=("activitynet", "th14kit"),
                                             batch_size=batch_size_for(raw))
        return sweepers[all_snippets]

    rows = list(ROWS)
    tune_path = work.file("tune.json")
    tuned = None
    if os.path.exists(tune_path):
        with open(tune_path) as f:
            tuned = json.load(f)
        rows.append((f"stpn tune on the {tuned['tuned_on']!r} split", LocalizerConfig.from_dict(tuned["chosen"]),
                     bool(tuned.get("chosen_all_snippets", False))))
    scores = {}
    for name, config, all_snippets in rows:
        row = sweeper(all_snippets).score(config)
        scores[name] = 100 * row["protocols"]["activitynet"]["average_mAP"]
        print(averages_line(name, row, f"{describe(config)}{' all_snippets' if all_snippets else ''}; "
                                       f"{row['seconds']:.1f} s"), flush=True)
    if tuned is not None:
        lift = scores[rows[-1][0]] - scores["paper default"]
        recorded = 100 * (tuned["test"]["tuned"]["protocols"]["activitynet"]["average_mAP"]
                          - tuned["test"]["paper_default"]["protocols"]["activitynet"]["average_mAP"])
        print(f"tuned lift over the paper default: {lift:+.2f} points (tune.json says {recorded:+.2f})")
        print(f"RESULT tuned_lift_activitynet={lift:.2f}")
    else:
        print(f"no {tune_path}: run `stpn tune --workdir={args.workdir}` for the tuned row", file=sys.stderr)


if __name__ == "__main__":
    main()
