"""`stpn export`: a SavedModel of the trained streams + test grid + localization."""

from __future__ import annotations

from absl import flags

from stpn_tf.cli.common import Command, Parsed, define_workdir, require


def define(fv: flags.FlagValues) -> None:
    define_workdir(fv, "training work directory (its recorded config gives the grid and localization settings)")
    flags.DEFINE_string("out", None, "export directory to create (required)", flag_values=fv)
    flags.DEFINE_list("streams", ["rgb", "flow"], "streams inside: rgb,flow or one of rgb, flow, joint",
                      flag_values=fv)
    flags.DEFINE_bool("overwrite", False, "replace an existing export directory", flag_values=fv)


def run(p: Parsed) -> int:
    from stpn_tf.cli import settings
    from stpn_tf.artifacts.workdir import WorkDir
    from stpn_tf.inference.export import run_export

    require(p.flags, "workdir", "out")
    work = WorkDir(p.workdir).require()
    cfg = p.config
    run_export(workdir=p.workdir, out=p.out, grid=settings.grid_config(cfg),
               localizer_config=settings.localizer_config(cfg), streams=p.streams, overwrite=p.overwrite)
    work.write_config("export", settings.as_json(cfg))  # after the export: a refused one records nothing
    return 0


COMMAND = Command(
    name="export", purpose="SavedModel of the trained streams, the test grid and the localization",
    usage="stpn export --workdir=W --out=E [--overwrite] [--config.localize.KEY=VALUE ...]",
    define=define, run=run, config_sections=("localize",),
    details="Signatures: serving_default (features in, detections out) and serve_examples (serialized\n"
            "tf.Examples of the project's TFRecord schema); README.md shows a client. The export is written\n"
            "to a temporary directory and renamed when complete.")
