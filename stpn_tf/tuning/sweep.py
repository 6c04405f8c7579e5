"""Sweeping and tuning localization settings over saved raw outputs, without rerunning the models.

A `Sweeper` holds one split's raw outputs as Localizer batches and its ground truth, and scores any
LocalizerConfig on them. Settings are graph inputs (stpn_tf.localize.config.RUNTIME_FIELDS), so
a sweep compiles once per structure (interpolation, number of proposal thresholds, NMS kind, bounds)
and then only runs. `tune` is a coordinate search over a space of settings; which split it may be run
on is the caller's business (`stpn tune` refuses the test split unless asked for by name).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import numpy as np

from stpn_tf.artifacts.annotations import VideoRecord
from stpn_tf.core import tables
from stpn_tf.core.errors import StpnError
from stpn_tf.evaluation.evaluate import AP_FUNCTIONS
from stpn_tf.evaluation.matching import EvalData, ground_truth_data, join_predictions
from stpn_tf.data.grid import DEFAULT_GRID_LENGTH
from stpn_tf.evaluation.thresholds import check_thresholds, default_tiou_thresholds
from stpn_tf.localize import Localizer, LocalizerConfig
from stpn_tf.inference.predict import localize_raw, localized_batches, raw_batches

# Proposal generation presets (README "Beyond the paper" gives their sources).
PROPOSALS: dict[str, dict[str, Any]] = {
    # STPN: one threshold (tcam_threshold) on psi = lambda * sigmoid(a).
    "paper": dict(proposal_signal="tcam", normalize=False, proposal_thresholds=()),
    # Several thresholds on psi (the range of the numpy trial).
    "multi": dict(proposal_signal="tcam", normalize=False,
                  proposal_thresholds=tuple(round(0.05 * i, 10) for i in range(1, 7))),
    # BaS-Net: min-max normalised per video and class, thresholds np.arange(0, 0.25, 0.025).
    "multi_normalized": dict(proposal_signal="tcam", normalize=True,
                             proposal_thresholds=tuple(float(t) for t in np.arange(0, 0.25, 0.025))),
    # Class-agnostic, thresholds on the attention (DELU uses linspace(0.1, 0.9, 20); 9 levels here).
    "attention": dict(proposal_signal="attention", normalize=False,
                      proposal_thresholds=tuple(float(t) for t in np.linspace(0.1, 0.9, 9))),
}


def batch_size_for(raw: Mapping[str, np.ndarray], videos: int = 256) -> int:
    """Videos per Localizer call for `raw`: `videos` at the paper's 400-position grid, fewer when the raw
    outputs are longer (all-snippet outputs are padded to the longest video), so a call holds about as
    many positions either way. Only speed and memory depend on it, never the scores."""
    positions = int(np.asarray(raw["rgb/attention"] if "rgb/attention" in raw else raw["joint/attention"]).shape[1])
    return max(1, videos * DEFAULT_GRID_LENGTH // max(positions, DEFAULT_GRID_LENGTH))


def with_setting(config: LocalizerConfig, key: str, value: Any) -> LocalizerConfig:
    """`config` with one setting changed; key "proposals" names a PROPOSALS preset."""
    if key == "proposals":
        if value not in PROPOSALS:
            raise StpnError(f"unknown proposals preset {value!r}; known: {', '.join(PROPOSALS)}")
        return config.replace(**PROPOSALS[value])
    if key not in config.to_dict():
        raise StpnError(f"unknown localize setting {key!r} in the tuning space")
    return LocalizerConfig.from_dict({**config.to_dict(), key: value})


def proposals_name(config: LocalizerConfig) -> str:
    for name, preset in PROPOSALS.items():
        if all(getattr(config, k) == v for k, v in preset.items()):
            return name
    return "custom"


def describe(config: LocalizerConfig) -> str:
    """A short one-line description of the settings that matter for the mAP."""
    parts = [f"proposals={proposals_name(config)}"]
    if config.proposal_streams != "both":
        parts.append(f"from={config.proposal_streams}")
    if not config.proposal_thresholds:
        parts.append(f"tcam_thr={config.tcam_threshold:g}")
    parts += [f"class_thr={config.class_threshold:g}", f"alpha={config.alpha:g}", f"score={config.scoring}"]
    if config.scoring == "oic":
        parts.append(f"gamma={config.oic_gamma:g}")
    parts.append(f"nms={config.nms}" + (f"(sigma={config.soft_nms_sigma:g})" if config.nms == "soft"
                                        else f"({config.nms_threshold:g})"))
    return " ".join(parts)


class Sweeper:
    """Scores localization settings on one split's raw outputs.

    Args:
      raw: Raw outputs (stpn_tf.inference.predict.load_raw).
      ground_truth: The split's records.
      streams: Streams of the localization (predict.localize_raw).
      protocols: Evaluation protocols; the first one ranks settings.
      tiou_thresholds: Evaluation thresholds (None: the protocol defaults).
      unknown_labels_as_fp: As in evaluate_detections.
      batch_size: Videos per Localizer call. Large batches are much faster on a CPU (the NMS loop's
        steps cost about the same for 16 videos as for 200); memory grows with batch x classes passing x
        thresholds x T.

    Scoring evaluates the padded detections directly (`eval_data`), which gives the same numbers as
    `evaluate_detections` on the results object (tests/test_sweep.py) without building it.
    """

    def __init__(self, raw: Mapping[str, np.ndarray], ground_truth: Sequence[VideoRecord], *,
                 streams: Sequence[str] = ("rgb", "flow"), protocols: Sequence[str] = ("activitynet",),
                 tiou_thresholds: Sequence[float] | None = None, unknown_labels_as_fp: bool = False,
                 batch_size: int = 256):
        self.raw, self.ground_truth, self.streams = raw, list(ground_truth), tuple(streams)
        self.protocols, self.tiou_thresholds = tuple(protocols), tiou_thresholds
        self.unknown_labels_as_fp = unknown_labels_as_fp
        self.batches = raw_batches(raw, streams=streams, batch_size=batch_size)
        self._localizers: dict[tuple, Localizer] = {}
        self._scores: dict[LocalizerConfig, dict[str, Any]] = {}
        self._data: dict[LocalizerConfig, EvalData] = {}
        self._truth = ground_truth_data(self.ground_truth)
        if self._truth.num_classes == 0:
            raise StpnError("ground truth has no action segments to evaluate against")
        self._thresholds = {p: default_tiou_thresholds(self.ground_truth, p) if tiou_thresholds is None
                            else check_thresholds(tiou_thresholds) for p in self.protocols}
        self._classes = [str(c) for c in raw["classes"]]
        self._video_ids = [str(v) for v in raw["video_id"]]
        known = set(self._truth.video_ids)
        extra = [v for v in self._video_ids if v not in known]
        if len(extra) == len(self._video_ids):
            raise StpnError(f"none of the {len(extra)} videos of the raw outputs is in the ground truth "
                            f"({len(known)} videos): wrong subset or ground-truth file?")

    def localizer(self, config: LocalizerConfig) -> Localizer:
        """The (compiled) Localizer of `config`'s structure, built once."""
        key = config.structure()
        if key not in self._localizers:
            self._localizers[key] = Localizer(config)
        return self._localizers[key]

    def results(self, config: LocalizerConfig) -> dict[str, Any]:
        """The detections of `config` (ActivityNet results object)."""
        return localize_raw(self.raw, self.localizer(config), streams=self.streams, settings=config,
                            batches=self.batches)

    def eval_data(self, config: LocalizerConfig) -> EvalData:
        """The ground truth with `config`'s detections, as `build_eval_data` makes it from the results
        (computed once per config: the report asks again for the settings it scored)."""
        if config not in self._data:
            self._data[config] = self._eval_data(config)
        return self._data[config]

    def _eval_data(self, config: LocalizerConfig) -> EvalData:
        # The valid slots of the padded detections, flattened video by video and slot by slot: the order
        # of the results object (stpn_tf.artifacts.results), so that ties rank alike.
        parts: dict[str, list[np.ndarray]] = {k: [] for k in ("video", "label", "start", "end", "score")}
        offset = 0
        for video_ids, out in localized_batches(self.raw, self.localizer(config), settings=config,
                                                batches=self.batches):
            n = len(video_ids)
            valid = np.arange(out["detection_scores"].shape[1])[None, :] < out["num_detections"][:n, None]
            rows, _ = np.nonzero(valid)
            parts["video"].append(offset + rows)
            parts["label"].append(out["detection_classes"][:n][valid])
            parts["start"].append(out["detection_segments"][:n, :, 0][valid])
            parts["end"].append(out["detection_segments"][:n, :, 1][valid])
            parts["score"].append(out["detection_scores"][:n][valid])
            offset += n
        joined = {k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items()}
        return join_predictions(self._truth, video_names=self._video_ids, video=joined["video"],
                                label_names=self._classes, label=joined["label"], start=joined["start"],
                                end=joined["end"], score=joined["score"],
                                unknown_labels_as_fp=self.unknown_labels_as_fp, source="the localized raw outputs")

    def score(self, config: LocalizerConfig) -> dict[str, Any]:
        """{"config", "setting", "average_mAP" (first protocol), "protocols": {p: {"average_mAP", "mAP",
        "tiou_thresholds"}}, "seconds"}; cached per config."""
        if config in self._scores:
            return self._scores[config]
        start = time.perf_counter()
        data = self.eval_data(config)
        row: dict[str, Any] = {"config": config.to_dict(), "setting": describe(config), "protocols": {}}
        for protocol in self.protocols:
            thresholds = self._thresholds[protocol]
            m_ap = AP_FUNCTIONS[protocol](data, thresholds).mean(axis=0)
            row["protocols"][protocol] = {"average_mAP": float(m_ap.mean()), "mAP": [float(x) for x in m_ap],
                                          "tiou_thresholds": [float(t) for t in thresholds]}
        row["average_mAP"] = row["protocols"][self.protocols[0]]["average_mAP"]
        row["seconds"] = time.perf_counter() - start
        self._scores[config] = row
        return row


def _at_half(row: Mapping[str, Any], protocol: str) -> float:
    r = row["protocols"][protocol]
    return dict(zip([round(t, 6) for t in r["tiou_thresholds"]], r["mAP"])).get(0.5, float("nan"))


def sweep_thresholds(raw: Mapping[str, np.ndarray], ground_truth: Sequence[VideoRecord], *,
                     base: LocalizerConfig, class_thresholds: Sequence[float], tcam_thresholds: Sequence[float],
                     streams: Sequence[str] = ("rgb", "flow"), protocol: str = "activitynet",
                     tiou_thresholds: Sequence[float] | None = None, unknown_labels_as_fp: bool = False,
                     batch_size: int = 16, out: TextIO | None = None) -> list[dict[str, Any]]:
    """The mAP of every (class threshold, T-CAM threshold) pair; prints one line per setting to `out`.

    Returns:
      [{"class_threshold", "tcam_threshold", "average_mAP", "mAP": [T], "tiou_thresholds": [T]}] in sweep
      order; the best setting is the one with the largest average_mAP (first on ties).
    """
    sweeper = Sweeper(raw, ground_truth, streams=streams, protocols=(protocol,), tiou_thresholds=tiou_thresholds,
                      unknown_labels_as_fp=unknown_labels_as_fp, batch_size=batch_size)
    rows = []
    if out is not None:
        print(tables.sweep_heading(), file=out)
    for ct, tt in itertools.product(class_thresholds, tcam_thresholds):
        scored = sweeper.score(base.replace(class_threshold=float(ct), tcam_threshold=float(tt)))
        r = scored["protocols"][protocol]
        rows.append({"class_threshold": float(ct), "tcam_threshold": float(tt), "average_mAP": r["average_mAP"],
                     "mAP": r["mAP"], "tiou_thresholds": r["tiou_thresholds"]})
        if out is not None:
            print(tables.sweep_line(ct, tt, r["average_mAP"], _at_half(scored, protocol)), file=out, flush=True)
    return rows


def best_setting(rows: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The row with the highest average mAP (the first such row on ties)."""
    return max(rows, key=lambda r: r["average_mAP"])


def tune(sweeper: Sweeper, base: LocalizerConfig, space: Mapping[str, Sequence[Any]], *, rounds: int = 2,
         joint: Sequence[str] = (), out: TextIO | None = None) -> tuple[LocalizerConfig, list[dict[str, Any]]]:
    """Coordinate search: for each coordinate in turn, the value with the best mAP given the others.

    A coordinate is one key of `space`, except that the keys named in `joint` form one coordinate (the
    first) whose values are all their combinations: options that only help together (multi-threshold
    proposals with OIC scoring, say) are then found. Starts from `base`; a round visits every coordinate;
    stops after `rounds` rounds or a round that changes nothing. A value replaces the current one only
    when it scores strictly higher, so ties keep the earlier (by default the paper's) setting.

    Returns:
      (the chosen config, every scored row in the order tried, each with "round" and "key").
    """
    if not space:
        raise StpnError("the tuning space is empty")
    missing = [k for k in joint if k not in space]
    if missing:
        raise StpnError(f"tune: joint keys {missing} are not in the tuning space")
    coordinates: list[tuple[str, list[tuple[tuple[str, Any], ...]]]] = []
    if joint:
        combos = itertools.product(*(space[k] for k in joint))
        coordinates.append(("+".join(joint), [tuple(zip(joint, combo)) for combo in combos]))
    coordinates += [(key, [((key, value),) for value in values]) for key, values in space.items() if key not in joint]
    current = base
    best = sweeper.score(current)
    history = [dict(best, round=0, key="start")]
    if out is not None:
        print(f"start {100 * best['average_mAP']:6.2f}  {best['setting']}", file=out, flush=True)
    for round_index in range(1, rounds + 1):
        changed = False
        for name, values in coordinates:
            for assignment in values:
                candidate = current
                for key, value in assignment:
                    candidate = with_setting(candidate, key, value)
                if candidate == current:
                    continue
                row = sweeper.score(candidate)
                history.append(dict(row, round=round_index, key=name))
                better = row["average_mAP"] > best["average_mAP"]
                if out is not None:
                    shown = ",".join(str(v) for _, v in assignment)
                    print(f"r{round_index} {name}={shown:<24} {100 * row['average_mAP']:6.2f} "
                          f"({row['seconds']:.1f} s){'  <- best so far' if better else ''}", file=out, flush=True)
                if better:
                    best, changed = row, True
            current = LocalizerConfig.from_dict(best["config"])
        if not changed:
            break
    return current, history
