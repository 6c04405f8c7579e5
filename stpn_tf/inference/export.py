"""`stpn export`: a training work directory's streams + the test grid + the Localizer as one SavedModel.

The graph and its signatures are stpn_tf.inference.module's; the directory layout is stpn_tf.artifacts.export_dir's.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence

import tensorflow as tf
from absl import logging

from stpn_tf.data.grid import GridConfig
from stpn_tf.core.errors import StpnError
from stpn_tf.artifacts import export_dir as export_io
from stpn_tf.core.atomic import atomic_directory
from stpn_tf.localize.config import LocalizerConfig
from stpn_tf.inference.runner import build_module
from stpn_tf.core.streams import TWO_STREAMS
from stpn_tf.inference.module import InferenceModule


def save_module(module: InferenceModule, out: str, *, source: str = "", overwrite: bool = False) -> None:
    """Writes `module` as an export directory, atomically (a temporary sibling, renamed when complete)."""
    with tempfile.TemporaryDirectory() as scratch, atomic_directory(out, overwrite=overwrite) as saved:
        # The asset's source file lives outside the SavedModel; saving copies it into assets/.
        module.classes_asset = tf.saved_model.Asset(
            export_io.write_classes_asset(scratch, [str(c) for c in module.class_names]))
        tf.saved_model.save(module, saved, signatures=module.signatures)
        export_io.write_export_info(saved, export_io.ExportInfo(
            classes=[str(c) for c in module.class_names], feature_dim=module.feature_dim,
            streams=[str(s) for s in module.streams],
            grid_length=module.grid.grid_length, localize=module.localizer.config.to_dict(),
            source=os.path.abspath(source) if source else ""))


def run_export(*, workdir: str, out: str, grid: GridConfig = GridConfig(),
               localizer_config: LocalizerConfig = LocalizerConfig(), streams: Sequence[str] = TWO_STREAMS,
               jit_compile: bool = True, overwrite: bool = False) -> int:
    """`stpn export`: SavedModel of the trained streams plus localization; prints the signatures.

    Args:
      workdir: Training work directory.
      out: Export directory to create (never inside a work directory's outputs).
      grid: Test grid baked into the graph.
      localizer_config: Localization settings baked into the graph.
      streams: rgb,flow (default) or one stream.
      jit_compile: XLA-compile the localization inside the export.
      overwrite: Replace an existing `out`.

    Returns:
      0 on success (input problems raise StpnError before anything is written).
    """
    if os.path.exists(out) and not overwrite:
        raise StpnError(f"{out}: already exists (pass --overwrite to replace it)")
    module = build_module(workdir, grid=grid, localizer_config=localizer_config, streams=streams,
                          jit_compile=jit_compile)
    save_module(module, out, source=workdir, overwrite=overwrite)
    logging.debug("exported %s -> %s", workdir, out)  # the lines below say it
    d = module.feature_dim
    print(f"SavedModel written to {out}")
    print(f"  serving_default: rgb/flow float32 [batch, time, {d}], num_snippets int32 [batch], "
          "seconds_per_snippet float32 [batch]")
    print("  serve_examples: examples string [batch] (serialized tf.train.Example, stpn_tf TFRecord schema)")
    print(f"  streams: {','.join(module.streams)}; grid: "
          f"{module.grid.grid_length or 'all real snippets'}; classes ({len(module.class_names)}): "
          f"{', '.join(module.class_names)}")
    return 0
