"""`stpn extract`: raw videos -> two-stream I3D snippet features (the per-video npy layout)."""

from __future__ import annotations

from absl import flags

from stpn_tf.cli.common import Command, Parsed, require
from stpn_tf.core.errors import StpnError


def define(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("out", None, "root of the per-video npy layout to write (required)", flag_values=fv)
    flags.DEFINE_string("split", "test", "split folder below --out", flag_values=fv)
    flags.DEFINE_bool("overwrite", False, "recompute videos that already have features", flag_values=fv)


def run(p: Parsed) -> int:
    from stpn_tf.cli import settings
    from stpn_tf.extract.pipeline import run_extract

    require(p.flags, "out")
    if not p.args:
        raise StpnError("give the videos (files or folders) to extract: stpn extract VIDEO... --out=DIR")
    cfg = p.config
    return run_extract(videos=p.args, out=p.out, split=p.split, models=settings.i3d_models(cfg),
                       config=settings.extract_config(cfg), overwrite=p.overwrite)


COMMAND = Command(
    name="extract", purpose="raw videos -> two-stream I3D snippet features (per-video npy layout)",
    usage="stpn extract VIDEO... --out=DIR [--split=test] --config.extract.rgb_model=M --config.extract.flow_model=M",
    define=define, run=run, config_sections=("extract",),
    details="Writes <out>/<split>/{rgb,flow,meta}/<video>.*; a rerun skips finished videos. Which Kinetics I3D\n"
            "models fit and how to use them offline: docs/extract.md.")
