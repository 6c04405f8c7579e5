"""`stpn tune`: choose localization settings on a split other than the test split, report test mAP.

The command reads the config's tuning space and runs stpn_tf.workflows.tune (the search, the config file
and tune.json); tuning on the test split is refused unless asked for by name (--allow_tuning_on_test).
"""

from __future__ import annotations

from absl import flags

from stpn_tf.cli.common import Command, Parsed, batch_size, define_workdir, require
from stpn_tf.core.errors import StpnError


def define(fv: flags.FlagValues) -> None:
    define_workdir(fv, "training work directory (both streams trained)")
    flags.DEFINE_string("split", None, "split to tune on (default config.tune.split)", flag_values=fv)
    flags.DEFINE_bool("allow_tuning_on_test", False, "allow --split to be the test split (outputs are then "
                      "labelled as tuned on the test split, an optimistic figure)", flag_values=fv)
    flags.DEFINE_string("out", None, "config file to write (default <workdir>/tuned_config.py)", flag_values=fv)
    flags.DEFINE_bool("unknown_labels_as_fp", False, "count predicted labels absent from a split's ground truth as "
                      "false positives (instead of an error)", flag_values=fv)


def run(p: Parsed) -> int:
    from stpn_tf import configs
    from stpn_tf.cli import settings
    from stpn_tf.workflows import tune

    require(p.flags, "workdir")
    cfg = p.config
    space = {key: tuple(cfg.tune.space[key]) for key in tune.ordered_keys(list(cfg.tune.space.keys()))
             if key != tune.GRID_KEY}
    if not space:
        raise StpnError("the tuning space is empty: config.tune.space needs a localize setting besides all_snippets")
    default_grid = (bool(cfg.localize.all_snippets),)
    grids = tuple(dict.fromkeys(bool(v) for v in cfg.tune.space.get(tune.GRID_KEY, default_grid)))
    if not grids:
        raise StpnError(f"config.tune.space.{tune.GRID_KEY} is empty: list False (the grid), True (every snippet) "
                        "or both")
    tune.run_tune(
        workdir=p.workdir, dataset_dir=cfg.dataset.dir, split=p.split or cfg.tune.split, split_named=bool(p.split),
        train_split=cfg.dataset.train_split, test_split=cfg.dataset.test_split,
        allow_tuning_on_test=p.allow_tuning_on_test, base=settings.localizer_config(cfg),
        grid=settings.grid_config(cfg), space=space, grids=grids, rounds=int(cfg.tune.rounds),
        joint=tuple(cfg.tune.joint), tiou_thresholds=settings.evaluation_thresholds(cfg),
        tune_batch_size=batch_size(p, "tune.batch_size"), batch_size=batch_size(p, "localize.batch_size"),
        unknown_labels_as_fp=p.unknown_labels_as_fp, out=p.out, objective=settings.tuning_objective(cfg),
        shipped_configs={name: configs.flat_keys(configs.load_config(name)) for name in configs.NAMES},
        config_values=configs.flat_keys(cfg))
    return 0


COMMAND = Command(
    name="tune", purpose="choose localization settings on the training split, report test mAP beside the paper's",
    usage="stpn tune --workdir=W [--split=train] [--out=W/tuned_config.py] [--allow_tuning_on_test]",
    define=define, run=run, config_sections=("dataset", "localize", "tune", "evaluate"),
    details="Writes a config file with the chosen config.localize values and <workdir>/tune.json (every setting\n"
            "tried, with its mAP on the tuning split; test mAP of the paper default and of the chosen settings).\n"
            "The search reads the tuning split's temporal annotations (THUMOS14: the validation videos).\n"
            "config.tune.space.all_snippets=(False, True) runs the search once on the paper's grid and once on\n"
            "every snippet (the models run on both splits for each) and keeps the better on the tuning split.")
