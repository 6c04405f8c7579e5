"""Sweeping and tuning localization settings over saved raw outputs, without rerunning the models.

A `Sweeper` holds one split's raw outputs as Localizer batches and its ground truth, and scores any
LocalizerConfig on them. Settings are graph inputs (stpn_tf.localize.config.RUNTIME_FIELDS), so
a sweep compiles once per structure (interpolation, number of proposal thresholds, bounds)
and then only runs. `tune` is a coordinate search over a space of settings; which split it may be run
on is the caller's business (`stpn tune` refuses the test split unless asked for by name).
"""

from __future__ import annotations

import collections
import gc
import itertools
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import numpy as np

from stpn_tf.artifacts.annotations import VideoRecord
from stpn_tf.core import tables
from stpn_tf.core.errors import StpnError
from stpn_tf.evaluation.evaluate import AP_FUNCTIONS
from stpn_tf.evaluation.matching import EvalData, ground_truth_data, join_predictions
from stpn_tf.evaluation.thresholds import check_thresholds, default_tiou_thresholds
from stpn_tf.localize import Localizer, LocalizerConfig
from stpn_tf.artifacts.raw_outputs import raw_streams
from stpn_tf.inference.predict import batch_size_for, localize_raw, localized_batches, raw_batches

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


# What a search maximises: one protocol's average mAP, or "min", the lower of the two protocols' averages
# (a setting that gains on one protocol and loses on the other is then no better).
OBJECTIVES = ("activitynet", "th14kit", "min")
BOTH = ("activitynet", "th14kit")
# The order a round of `tune` visits the keys of a space (ConfigDict keys come back sorted by name).
KEY_ORDER = ("proposals", "scoring", "nms", "proposal_streams", "class_threshold", "tcam_threshold", "alpha",
             "oic_margin", "oic_gamma", "nms_threshold", "soft_nms_sigma", "min_score", "detections_per_video")


def ordered_keys(keys: Sequence[str]) -> list[str]:
    """The keys of a tuning space in the order a round visits them (KEY_ORDER, then the others by name)."""
    return sorted(keys, key=lambda k: (KEY_ORDER.index(k) if k in KEY_ORDER else len(KEY_ORDER), k))


def objective_for(protocol: str, objective: str = "") -> str:
    """The objective of a run: `objective` when given, else the one `protocol` (config.evaluate.protocol)
    implies: "both" -> "min", else that protocol."""
    name = objective or ("min" if protocol == "both" else protocol)
    if name not in OBJECTIVES:
        raise StpnError(f"unknown tuning objective {name!r}; known: {', '.join(OBJECTIVES)} (or empty: follow "
                        "evaluate.protocol)")
    return name


def objective_protocols(objective: str) -> tuple[str, ...]:
    """The protocols an objective covers."""
    return BOTH if objective == "min" else (objective,)


def objective_value(row: Mapping[str, Any], objective: str) -> float:
    """The objective of a scored row ({"protocols": {p: {"average_mAP"}}}): the lower average for "min"."""
    return min(row["protocols"][p]["average_mAP"] for p in objective_protocols(objective))


def protocols_text(row: Mapping[str, Any]) -> str:
    """Both protocols' average mAP (%) of a scored row, for the search's lines."""
    r = row["protocols"]
    return "  ".join(f"{name} {100 * r[p]['average_mAP']:6.2f}" for p, name in
                     (("activitynet", "ActivityNet"), ("th14kit", "toolkit")) if p in r)


# Sweeper batches: stream-output elements (videos x T x C) per Localizer call. The eager Localizer bounds a
# compiled call's memory itself (row chunks of one length each), so a batch only has to hold its inputs:
# 2^25 float32 (128 MB per array) is a whole THUMOS14 split even on every snippet.
SWEEP_ELEMENTS = 2 ** 25


def sweep_batch_size(raw: Mapping[str, np.ndarray], videos: int = 0) -> int:
    """Videos per Localizer call of a sweep over `raw`: `videos` > 0 as `batch_size_for` gives it (that many
    at the paper's grid), or 0 (the default): as many as hold SWEEP_ELEMENTS stream-output elements."""
    if videos > 0:
        return batch_size_for(raw, videos)
    tcam = np.asarray(raw[f"{raw_streams(raw)[0]}/tcam"])
    return max(1, SWEEP_ELEMENTS // max(1, tcam.shape[1] * tcam.shape[2]))


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
        parts.append(f"gamma={config.oic_gamma:g} margin={config.oic_margin:g}")
    parts.append(f"nms={config.nms}" + (f"(sigma={config.soft_nms_sigma:g})" if config.nms == "soft"
                                        else f"({config.nms_threshold:g})"))
    if config.min_score > -math.inf:
        parts.append(f"min_score={config.min_score:g}")
    if config.detections_per_video:
        parts.append(f"per_video={config.detections_per_video}")
    return " ".join(parts)


class LocalizerCache:
    """Localizers by structure with their compiled functions, the `size` most recently used kept.

    A Localizer holds one compiled function per row shape (`Localizer(derive_slots=False)`: no slot buckets,
    one compile per structure and row width instead of one per slot bucket as well; settings such as the
    T-CAM threshold would move the bucket, and a compile costs seconds). Under XLA, as `stpn localize`
    runs it, so the scores are bit for bit the ones the chosen settings give there. A search tries hundreds
    of settings over a few structures (the shipped space has 4: one per proposal preset); beyond `size` the
    least recently used is dropped (compiled again if asked for again).
    """

    def __init__(self, size: int = 6):
        self.size = max(1, int(size))
        self._localizers: collections.OrderedDict[tuple, Localizer] = collections.OrderedDict()
        self._released = 0

    def get(self, config: LocalizerConfig) -> Localizer:
        key = config.structure()
        if key in self._localizers:
            self._localizers.move_to_end(key)
            return self._localizers[key]
        while len(self._localizers) >= self.size:
            _, dropped = self._localizers.popitem(last=False)
            self._released += dropped.tracing_count()
            del dropped
            gc.collect()  # the functions sit in reference cycles; free their graphs now, not at some later gc
        self._localizers[key] = Localizer(config, derive_slots=False)
        return self._localizers[key]

    def compiles(self) -> int:
        """Functions compiled so far (one XLA compile each), dropped Localizers included."""
        return self._released + sum(loc.tracing_count() for loc in self._localizers.values())


class Sweeper:
    """Scores localization settings on one split's raw outputs.

    Args:
      raw: Raw outputs (stpn_tf.artifacts.raw_outputs.load_raw).
      ground_truth: The split's records.
      streams: Streams of the localization (predict.localize_raw).
      protocols: Evaluation protocols; the first one ranks settings.
      tiou_thresholds: Evaluation thresholds (None: the protocol defaults).
      unknown_labels_as_fp: As in evaluate_detections.
      batch_size: Videos per Localizer call. Large batches are much faster on a CPU (the NMS loop's
        steps cost about the same for 16 videos as for 200); memory grows with batch x classes passing x
        thresholds x T.
      objective: What `score` rows carry as "objective" and `tune` maximises (OBJECTIVES; default the
        first protocol); its protocols must be among `protocols`.
      localizers: A LocalizerCache to share with other sweepers (the tuning and the test split's: the same
        compiled functions serve both), or the number of Localizers a new one keeps.
      kept_data: Evaluation data (`eval_data`) kept for the most recently scored settings.

    Scoring evaluates the padded detections directly (`eval_data`), which gives the same numbers as
    `evaluate_detections` on the results object (tests/test_sweep.py) without building it.
    """

    def __init__(self, raw: Mapping[str, np.ndarray], ground_truth: Sequence[VideoRecord], *,
                 streams: Sequence[str] = ("rgb", "flow"), protocols: Sequence[str] = ("activitynet",),
                 tiou_thresholds: Sequence[float] | None = None, unknown_labels_as_fp: bool = False,
                 batch_size: int = 256, objective: str | None = None,
                 localizers: "int | LocalizerCache" = 6, kept_data: int = 2):
        self.raw, self.ground_truth, self.streams = raw, list(ground_truth), tuple(streams)
        self.protocols, self.tiou_thresholds = tuple(protocols), tiou_thresholds
        self.objective = objective or self.protocols[0]
        missing = [p for p in objective_protocols(objective_for("", self.objective)) if p not in self.protocols]
        if missing:
            raise StpnError(f"Sweeper: objective {self.objective!r} needs protocols {missing} to be scored")
        self.unknown_labels_as_fp = unknown_labels_as_fp
        self.batches = raw_batches(raw, streams=streams, batch_size=batch_size)
        # Bounded caches: every Localizer holds its compiled functions, every EvalData a split's detections;
        # a search tries hundreds of settings over several structures, so only the last few are kept.
        self.localizers = localizers if isinstance(localizers, LocalizerCache) else LocalizerCache(localizers)
        self._max_data = max(0, kept_data)
        self._scores: dict[LocalizerConfig, dict[str, Any]] = {}
        self._data: collections.OrderedDict[LocalizerConfig, EvalData] = collections.OrderedDict()
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
        return self.localizers.get(config)

    def compiles(self) -> int:
        """Functions compiled so far (one XLA compile each), dropped Localizers included."""
        return self.localizers.compiles()

    def results(self, config: LocalizerConfig) -> dict[str, Any]:
        """The detections of `config` (ActivityNet results object)."""
        return localize_raw(self.raw, self.localizer(config), streams=self.streams, settings=config,
                            batches=self.batches)

    def eval_data(self, config: LocalizerConfig) -> EvalData:
        """The ground truth with `config`'s detections, as `build_eval_data` makes it from the results
        (computed once per config: the report asks again for the settings it scored)."""
        if config in self._data:
            self._data.move_to_end(config)
            return self._data[config]
        data = self._eval_data(config)
        if self._max_data:
            self._data[config] = data
            while len(self._data) > self._max_data:
                self._data.popitem(last=False)
        return data

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
        """{"config", "setting", "average_mAP" (first protocol), "objective" (`objective_value`), "protocols":
        {p: {"average_mAP", "mAP", "tiou_thresholds"}}, "seconds"}; cached per config (rows are small)."""
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
        row["objective"] = objective_value(row, self.objective)
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
    """Coordinate search: for each coordinate in turn, the value with the best objective given the others.

    The objective is the sweeper's (`Sweeper.objective`: one protocol's average mAP, or the lower of the
    two). A coordinate is one key of `space`, except that the keys named in `joint` form one coordinate (the
    first) whose values are all their combinations: options that only help together (multi-threshold
    proposals with OIC scoring, say) are then found. Starts from `base`; a round visits every coordinate;
    stops after `rounds` rounds or a round that changes nothing. A value that the current settings leave
    unread (OIC's margin under mean scoring, say: `LocalizerConfig.effective`) is not scored, as it gives the
    current detections. A value replaces the current one only
    when its objective is strictly higher AND it scores at least `base`'s average mAP under every protocol
    the objective covers, so ties keep the earlier (by default the paper's) setting and the chosen setting
    never falls below `base` under any covered protocol (it is `base` when nothing else qualifies).

    Returns:
      (the chosen config, every scored row in the order tried, each with "round", "key" and "admissible").
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
    covered = objective_protocols(sweeper.objective)
    current = base
    best = start = sweeper.score(current)
    floor = {p: start["protocols"][p]["average_mAP"] for p in covered}

    def admissible(row: Mapping[str, Any]) -> bool:
        return all(row["protocols"][p]["average_mAP"] >= floor[p] for p in covered)

    history = [dict(best, round=0, key="start", admissible=True)]

    def label(round_index: int, name: str, assignment) -> str:
        return f"r{round_index} {name}={','.join(str(v) for _, v in assignment)}"

    # One column for the scores, whatever the longest setting's label.
    width = max((len(label(rounds, name, assignment)) for name, values in coordinates for assignment in values),
                default=len("start"))
    if out is not None:
        print(f"objective: {sweeper.objective} ({'the lower of ' if len(covered) > 1 else ''}"
              f"{' and '.join(covered)} average mAP); a setting must not fall below the start under "
              f"{' or '.join(covered)}", file=out)
        print(f"{'start':<{width}} {100 * best['objective']:6.2f}  {protocols_text(best)}  {best['setting']}", file=out,
              flush=True)
    for round_index in range(1, rounds + 1):
        changed = False
        for name, values in coordinates:
            for assignment in values:
                candidate = current
                for key, value in assignment:
                    candidate = with_setting(candidate, key, value)
                if candidate.effective() == current.effective():  # the same detections: nothing to score
                    continue
                row = sweeper.score(candidate)
                allowed = admissible(row)
                history.append(dict(row, round=round_index, key=name, admissible=allowed))
                better = allowed and row["objective"] > best["objective"]
                if out is not None:
                    note = "  <- best so far" if better else ("" if allowed else "  (below the start: not eligible)")
                    print(f"{label(round_index, name, assignment):<{width}} {100 * row['objective']:6.2f}  "
                          f"{protocols_text(row)} ({row['seconds']:.1f} s){note}", file=out, flush=True)
                if better:
                    best, changed = row, True
            current = LocalizerConfig.from_dict(best["config"])
        if not changed:
            break
    return current, history


def search_raw(raw_tune: Mapping[str, np.ndarray], tune_truth: Sequence[VideoRecord],
               raw_test: Mapping[str, np.ndarray], test_truth: Sequence[VideoRecord], *, base: LocalizerConfig,
               space: Mapping[str, Sequence[Any]], rounds: int, joint: Sequence[str], objective: str,
               tiou_thresholds: Sequence[float] | None = None, batch_size: int = 0,
               unknown_labels_as_fp: bool = False, on_test: bool = False,
               out: TextIO | None = None) -> dict[str, Any]:
    """One grid choice of `stpn tune` on raw outputs: the search on the tuning split (none when `space` is
    empty) and the test scores (both protocols) of `base` and of the chosen settings.

    Args:
      raw_tune, tune_truth: The tuning split's raw outputs and ground truth.
      raw_test, test_truth: The test split's.
      on_test: The tuning split is the test split (`raw_tune` is ignored; one sweeper serves both).
      batch_size: Videos per Localizer call (`sweep_batch_size`; 0: from the data).
      Others as in `tune` and `Sweeper`.

    Returns:
      {"test_default", "tuning_default" (base's rows on the test and tuning splits), "compiles"} and, with
      a space, "chosen" (config dict), "history", "tuning" (the chosen setting's row on the tuning split),
      "test_chosen".
    """
    options = dict(protocols=BOTH, tiou_thresholds=tiou_thresholds, objective=objective, localizers=LocalizerCache(),
                   batch_size=sweep_batch_size(raw_test, batch_size), unknown_labels_as_fp=unknown_labels_as_fp)
    tester = Sweeper(raw_test, test_truth, **options)
    result: dict[str, Any] = {"test_default": tester.score(base)}
    if on_test:
        sweeper = tester
    else:
        sweeper = Sweeper(raw_tune, tune_truth, **dict(options, batch_size=sweep_batch_size(raw_tune, batch_size)))
    result["tuning_default"] = sweeper.score(base)
    if space:
        chosen, history = tune(sweeper, base, space, rounds=rounds, joint=joint, out=out)
        result.update(chosen=chosen.to_dict(), history=history, tuning=sweeper.score(chosen))
        result["test_chosen"] = tester.score(chosen)
    result["compiles"] = tester.compiles()  # the two sweepers share their Localizers
    del sweeper, tester, options
    gc.collect()
    return result
