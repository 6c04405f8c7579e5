"""`stpn study`: seed studies, mean / std / min / max mAP per tIoU over seeds, both protocols."""

from __future__ import annotations

from absl import flags

from stpn_tf.cli.common import Command, Parsed, batch_size, define_workdir, require
from stpn_tf.core.errors import StpnError


def define(fv: flags.FlagValues) -> None:
    define_workdir(fv, "study directory: one training work directory per seed (seed_<n>), study.json, study.txt")
    flags.DEFINE_list("seeds", ["0", "1", "2", "3", "4"], "training seeds (config.train.seed of each run)",
                      flag_values=fv)
    flags.DEFINE_string("tuned_config", None, "also localize with the config.localize values of this config file "
                        "(e.g. a tuned_config.py written by `stpn tune`)", flag_values=fv)
    flags.DEFINE_bool("unknown_labels_as_fp", False, "count predicted labels absent from the test ground truth as "
                      "false positives (instead of an error)", flag_values=fv)


def run(p: Parsed) -> int:
    from stpn_tf import configs
    from stpn_tf.workflows import study
    from stpn_tf.cli import settings

    require(p.flags, "workdir")
    cfg = p.config
    if not cfg.dataset.dir:
        raise StpnError("config.dataset.dir is empty: pass --config.dataset.dir=<directory from stpn build-dataset "
                        "or a demo's <workdir>/dataset>")
    try:
        seeds = [int(s) for s in p.seeds]
    except ValueError:
        raise StpnError(f"--seeds must be integers, got {','.join(p.seeds)}") from None
    named = {"paper default": settings.localizer_config(cfg)}
    grids = {}
    if p.tuned_config:
        tuned_cfg = configs.load_config(p.tuned_config)
        named["tuned"] = settings.localizer_config(tuned_cfg)
        grids["tuned"] = settings.grid_config(tuned_cfg)  # stpn tune may have chosen every snippet
        if named["tuned"].structure()[0] != named["paper default"].structure()[0]:
            raise StpnError(f"{p.tuned_config}: its localize.interpolation differs from this config's")
    study.run_study(study_dir=p.workdir, dataset_dir=cfg.dataset.dir, seeds=seeds, model=settings.model_config(cfg),
                    train=settings.train_config(cfg), grid=settings.grid_config(cfg), settings=named,
                    train_split=cfg.dataset.train_split, test_split=cfg.dataset.test_split,
                    tiou_thresholds=settings.evaluation_thresholds(cfg), batch_size=batch_size(p, "localize.batch_size"),
                    config_record=settings.as_json(cfg), config_name=p.config_name,
                    unknown_labels_as_fp=p.unknown_labels_as_fp, grids=grids, objective=settings.tuning_objective(cfg))
    return 0


COMMAND = Command(
    name="study", purpose="seed study: train both streams per seed, mAP mean / std / min / max over seeds",
    usage="stpn study --workdir=S --config.dataset.dir=D [--seeds=0,1,2,3,4] [--tuned_config=W/tuned_config.py]",
    define=define, run=run, config_sections=("dataset", "model", "train", "localize", "evaluate", "tune"),
    details="Resumable: rerun the same command; trained seeds and streams are reused, an interrupted training\n"
            "resumes. Seeds run one after another.")
