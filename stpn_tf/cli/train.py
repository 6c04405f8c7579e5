"""`stpn train`: one stream of STPN on a built dataset."""

from __future__ import annotations

import os

from absl import flags

from stpn_tf.cli.common import Command, Parsed, check_dataset_dir, define_workdir, require
from stpn_tf.core.errors import StpnError
from stpn_tf.artifacts.workdir import MODEL_STREAMS, WorkDir


def define(fv: flags.FlagValues) -> None:
    define_workdir(fv, "training work directory: models, logs, checkpoints, and a record of the dataset and config")
    flags.DEFINE_enum("stream", None, list(MODEL_STREAMS), "which stream to train (joint: one model on the "
                      "concatenated RGB and flow features, an extra beside the paper's two streams) (required)",
                      flag_values=fv)


def check(p: Parsed) -> None:
    """Flags and the dataset, before TensorFlow loads and before training is announced."""
    require(p.flags, "workdir", "stream")
    if not WorkDir(p.workdir).is_trained(p.stream):  # a trained stream is reported as such, dataset or not
        check_dataset_dir(p.config.dataset.dir)


def run(p: Parsed) -> int:
    from stpn_tf.cli import settings
    from stpn_tf.training import trainer as train

    require(p.flags, "workdir", "stream")
    cfg = p.config
    if not cfg.dataset.dir:
        raise StpnError("config.dataset.dir is empty: pass --config.dataset.dir=<directory from stpn build-dataset>")
    model, train_config = settings.model_config(cfg), settings.train_config(cfg)  # checked before any write
    work = WorkDir(p.workdir)
    if work.is_trained(p.stream):
        print(f"{work.model_path(p.stream)} exists: the {p.stream} stream is already trained (delete it, or use "
              "another --workdir, to train again with other settings)")
        return 0
    print(f"training the {p.stream} stream into {os.path.join(p.workdir, p.stream)} ({train_config.steps} steps; "
          "Ctrl-C stops it, the same command resumes it)", flush=True)
    train.run_train(dataset_dir=cfg.dataset.dir, workdir=p.workdir, stream=p.stream,
                    train_split=cfg.dataset.train_split, model=model, train=train_config,
                    config_record=settings.as_json(cfg), config_name=p.config_name)
    return 0


COMMAND = Command(
    name="train", purpose="train one STPN stream (rgb, flow or joint) on a built dataset",
    usage="stpn train --workdir=DIR --stream=rgb|flow|joint [--config=NAME|FILE] [--config.SECTION.KEY=VALUE ...]",
    define=define, run=run, check=check, config_sections=("dataset", "model", "train"),
    details="Resumable: after a kill or Ctrl-C, rerun the same command; it continues from the last finished\n"
            "epoch. When train.steps is not a multiple of train.steps_per_epoch, the last epoch is shorter.")
