"""The one place a ConfigDict becomes the typed settings objects the library takes.

Library code never reads the config: each concern has its own settings object (frozen dataclass) with
its own checks, built here from the config's section. Each settings class is imported where it is built,
so that a command that needs no TensorFlow (`stpn localize --raw`) does not load it with the model's.
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any

import ml_collections

from stpn_tf.core.errors import StpnError
from stpn_tf.localize.config import LocalizerConfig

if TYPE_CHECKING:
    from stpn_tf.data.grid import GridConfig
    from stpn_tf.data.synthetic import SyntheticConfig
    from stpn_tf.extract.flow import TVL1Options
    from stpn_tf.extract.pipeline import ExtractConfig, I3DModels
    from stpn_tf.model.stpn import ModelConfig
    from stpn_tf.training.trainer import TrainConfig


def _fields(cls, section: ml_collections.ConfigDict, name: str, **renamed) -> dict[str, Any]:
    """The keys of `section` that are fields of `cls` (a missing field keeps the dataclass default)."""
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: section[k] for k in section.keys() if k in names}
    for field, key in renamed.items():
        if key in section:
            values[field] = section[key]
    return values


def model_config(config: ml_collections.ConfigDict) -> ModelConfig:
    from stpn_tf.model.stpn import ModelConfig

    return ModelConfig(**_fields(ModelConfig, config.model, "model"))


def train_config(config: ml_collections.ConfigDict) -> TrainConfig:
    from stpn_tf.training.trainer import TrainConfig

    return TrainConfig(**_fields(TrainConfig, config.train, "train"))


def grid_config(config: ml_collections.ConfigDict) -> GridConfig:
    from stpn_tf.data.grid import GridConfig

    return GridConfig(length=int(config.localize.num_snippets), all_snippets=bool(config.localize.all_snippets))


def localizer_config(config: ml_collections.ConfigDict) -> LocalizerConfig:
    return LocalizerConfig.from_dict(_fields(LocalizerConfig, config.localize, "localize"))


def tvl1_options(config: ml_collections.ConfigDict) -> TVL1Options:
    from stpn_tf.extract.flow import TVL1Options

    ex = config.extract
    return TVL1Options(scales=int(ex.tvl1_scales), warps=int(ex.tvl1_warps),
                       inner_iterations=int(ex.tvl1_inner_iterations), outer_iterations=int(ex.tvl1_outer_iterations))


def extract_config(config: ml_collections.ConfigDict) -> ExtractConfig:
    from stpn_tf.extract.pipeline import ExtractConfig

    ex = config.extract
    return ExtractConfig(fps=float(ex.fps), stride_frames=int(ex.stride_frames), short_side=int(ex.short_side),
                         crop_size=int(ex.crop_size), batch_size=int(ex.batch_size), tvl1=tvl1_options(config))


def i3d_models(config: ml_collections.ConfigDict) -> I3DModels:
    from stpn_tf.extract.pipeline import I3DModels

    ex = config.extract
    return I3DModels(rgb_model=ex.rgb_model, flow_model=ex.flow_model,
                     rgb_feature_tensor=ex.rgb_feature_tensor or None,
                     flow_feature_tensor=ex.flow_feature_tensor or None)


def synthetic_config(config: ml_collections.ConfigDict) -> SyntheticConfig:
    from stpn_tf.data.synthetic import SyntheticConfig

    return SyntheticConfig(**_fields(SyntheticConfig, config.synthetic, "synthetic"))


def evaluation_thresholds(config: ml_collections.ConfigDict) -> list[float]:
    return [float(t) for t in config.evaluate.tiou_thresholds]


def tuning_objective(config: ml_collections.ConfigDict) -> str:
    """config.tune.objective, or (empty) what config.evaluate.protocol implies: "both" -> "min"."""
    from stpn_tf.tuning.sweep import objective_for

    tune = config.get("tune") or {}
    return objective_for(str(config.evaluate.get("protocol", "both")), str(tune.get("objective", "") or ""))


def as_json(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The config as plain JSON values (what work directories record)."""
    try:
        return json.loads(config.to_json_best_effort())
    except (TypeError, ValueError) as error:
        raise StpnError(f"the config cannot be recorded as JSON ({error})") from None
