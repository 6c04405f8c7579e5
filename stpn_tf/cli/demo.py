"""`stpn demo`: the embedded THUMOS14-shaped dataset end to end."""

from __future__ import annotations

from absl import flags

from stpn_tf.cli.common import Command, Parsed, define_workdir, require


def define(fv: flags.FlagValues) -> None:
    define_workdir(fv, "work directory of the run: dataset, models, detections, tables")


def check(p: Parsed) -> None:
    """Before TensorFlow loads: a rerun asking for other training settings is refused at once."""
    import json

    from stpn_tf.artifacts.workdir import WorkDir

    require(p.flags, "workdir")
    WorkDir(p.workdir).check_training_settings(json.loads(p.config.to_json_best_effort()))


def run(p: Parsed) -> int:
    from stpn_tf.cli import settings
    from stpn_tf.workflows import demo

    require(p.flags, "workdir")
    cfg = p.config
    demo.run_demo(
        workdir=p.workdir, synthetic=settings.synthetic_config(cfg), model=settings.model_config(cfg),
        train=settings.train_config(cfg), grid=settings.grid_config(cfg),
        localizer_config=settings.localizer_config(cfg), batch_size=int(cfg.localize.batch_size),
        protocol=cfg.evaluate.protocol, tiou_thresholds=settings.evaluation_thresholds(cfg),
        config_record=settings.as_json(cfg), config_name=p.config_name)
    return 0


COMMAND = Command(
    name="demo", purpose="the embedded THUMOS14-shaped dataset end to end: data, both streams, localization, "
                         "both evaluation protocols",
    usage="stpn demo --workdir=DIR [--config.SECTION.KEY=VALUE ...]",
    define=define, run=run, check=check, config_sections=("synthetic", "model", "train", "localize", "evaluate"),
    default_config="demo",
    details="It reuses what a previous run left in the work directory (dataset, trained streams); a rerun\n"
            "may change localization and evaluation settings, and refuses other training settings (config.model,\n"
            "config.train): those need a new --workdir. Afterwards `stpn localize --workdir=DIR` and `stpn export\n"
            "--workdir=DIR --out=E` need no other flag.")
