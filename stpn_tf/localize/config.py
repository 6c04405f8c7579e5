"""The Localizer's settings: LocalizerConfig, its codec (from_dict / to_dict), and which settings are
structure (they shape the compiled graph) and which are runtime inputs of it.

Pure Python: the numpy reference (`reference.py`) reads these settings without TensorFlow. The graph
inputs that carry the runtime settings are made in `graph.runtime_tensors`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

from stpn_tf.configs.thumos14 import LOCALIZE as PAPER
from stpn_tf.core.errors import StpnError

PROPOSAL_SIGNALS = ("tcam", "attention")
PROPOSAL_STREAMS = ("both", "rgb", "flow")
SCORINGS = ("mean", "oic")
NMS_KINDS = ("hard", "soft")
# Settings that are inputs of the compiled graph (a new value needs no new compile); every other field
# is structure (interpolation, the number of proposal thresholds and the bounds).
RUNTIME_FIELDS = ("class_threshold", "tcam_threshold", "proposal_thresholds", "alpha", "nms_threshold", "nms",
                  "proposal_streams", "proposal_signal", "normalize", "scoring", "oic_margin", "oic_gamma", "soft_nms_sigma",
                  "min_score", "detections_per_video")


@dataclasses.dataclass(frozen=True)
class LocalizerConfig:
    """Every setting of STPN localization (spec section 3), the options beyond it, and the static bounds.

    The defaults are the paper's protocol and bounds far above what a 400-position grid produces, so they
    do not cap recall; they are read from stpn_tf.configs.thumos14.LOCALIZE, their one source. The options
    after `nms_threshold` come from STPN's successors (README "Beyond the paper"); each is off by default
    and they combine.

    Attributes:
      class_threshold: A stream proposes class c iff its video probability >= this (0.1).
      tcam_threshold: Proposals are runs of the interpolated signal > this (0.05); the paper's signal is
        the weighted T-CAM psi = lambda * sigmoid(a).
      alpha: RGB weight of the score sequence, eq. 7 (0.5).
      interpolation: Integer interpolation factor k (24).
      nms_threshold: Per-class hard NMS suppresses tIoU > this (0.5).
      proposal_thresholds: Several thresholds instead of `tcam_threshold` (empty: the paper's one); the
        components of every threshold are pooled before NMS (BaS-Net, CoLA, DELU).
      proposal_streams: "both" (the paper: each stream proposes the classes passing in it), or "rgb" /
        "flow": only that stream's signal makes proposals, for every class that passes `class_threshold`
        in either stream (the video-level decision still uses both); scores are eq. 7's as always.
      proposal_signal: "tcam" (psi, the paper) or "attention" (lambda itself, class-agnostic proposals
        scored per passing class, as CoLA / DELU threshold their actionness).
      normalize: Min-max normalise the signal per video and class over the valid positions before
        thresholding: (x - max(min, 0)) / (max(max, 0) - max(min, 0)), a range <= 0 counting as 1 (BaS-Net).
      scoring: "mean" (eq. 7's mean) or "oic": outer-inner contrast (AutoLoc, BaS-Net, CoLA): the mean
        inside minus the mean over margins of `oic_margin` x the length on each side, plus `oic_gamma`
        x the class's video probability alpha p_rgb + (1 - alpha) p_flow.
      oic_margin: Margin ratio of OIC (0.25).
      oic_gamma: Weight of the video probability in OIC (0.2).
      nms: "hard" (the paper) or "soft": Gaussian soft-NMS, scores decayed by exp(-tIoU^2 / sigma).
      soft_nms_sigma: sigma of soft-NMS (0.3, DELU).
      min_score: Detections scoring below this after NMS (soft-NMS: the decayed score) are dropped (-inf:
        none). Under the THUMOS14 toolkit's matching (largest overlap, whatever the confidence) the
        decayed near-duplicates that soft-NMS keeps take matches from the confident detections; this
        drops them.
      detections_per_video: Keep only this many detections per video, the best in the final order (0:
        all, up to max_detections). Fewer low-ranked detections, fewer stolen toolkit matches.
      max_detections: K, detections kept per video (output slots).
      max_components_per_class: M, proposals per video, stream and class entering NMS (over all thresholds).
      max_classes_per_video: Q, classes localized per video (the most probable), None for all.
    """

    class_threshold: float = PAPER["class_threshold"]
    tcam_threshold: float = PAPER["tcam_threshold"]
    alpha: float = PAPER["alpha"]
    interpolation: int = PAPER["interpolation"]
    nms_threshold: float = PAPER["nms_threshold"]
    proposal_thresholds: tuple = PAPER["proposal_thresholds"]
    proposal_streams: str = PAPER["proposal_streams"]
    proposal_signal: str = PAPER["proposal_signal"]
    normalize: bool = PAPER["normalize"]
    scoring: str = PAPER["scoring"]
    oic_margin: float = PAPER["oic_margin"]
    oic_gamma: float = PAPER["oic_gamma"]
    nms: str = PAPER["nms"]
    soft_nms_sigma: float = PAPER["soft_nms_sigma"]
    min_score: float = PAPER["min_score"]
    detections_per_video: int = PAPER["detections_per_video"]
    max_detections: int = PAPER["max_detections"]
    max_components_per_class: int = PAPER["max_components_per_class"]
    max_classes_per_video: int | None = PAPER["max_classes_per_video"] or None  # the config's 0: all classes

    def __post_init__(self):
        object.__setattr__(self, "proposal_thresholds", tuple(float(t) for t in self.proposal_thresholds))
        if int(self.interpolation) != self.interpolation or self.interpolation < 1:
            raise StpnError(f"localize: interpolation must be a positive integer, got {self.interpolation}")
        if self.max_detections < 1 or self.max_components_per_class < 1:
            raise StpnError(f"localize: max_detections and max_components_per_class must be >= 1, got "
                            f"{self.max_detections} and {self.max_components_per_class}")
        if self.max_classes_per_video is not None and self.max_classes_per_video < 1:
            raise StpnError("localize: max_classes_per_video must be >= 1, or 0 / None for all classes, got "
                            f"{self.max_classes_per_video}")
        for name in ("class_threshold", "tcam_threshold", "alpha", "nms_threshold", "oic_margin", "oic_gamma",
                     "soft_nms_sigma"):
            if not math.isfinite(float(getattr(self, name))):
                raise StpnError(f"localize: {name} must be a finite number, got {getattr(self, name)}")
        if math.isnan(float(self.min_score)) or float(self.min_score) == math.inf:
            raise StpnError(f"localize: min_score must be a number or -inf, got {self.min_score}")
        if int(self.detections_per_video) != self.detections_per_video or self.detections_per_video < 0:
            raise StpnError("localize: detections_per_video must be an integer >= 0 (0: all), got "
                            f"{self.detections_per_video}")
        if not all(math.isfinite(t) for t in self.proposal_thresholds):
            raise StpnError(f"localize: proposal_thresholds must be finite numbers, got {self.proposal_thresholds}")
        for name, allowed in (("proposal_streams", PROPOSAL_STREAMS), ("proposal_signal", PROPOSAL_SIGNALS),
                              ("scoring", SCORINGS), ("nms", NMS_KINDS)):
            if getattr(self, name) not in allowed:
                raise StpnError(f"localize: {name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.oic_margin < 0:
            raise StpnError(f"localize: oic_margin must be >= 0, got {self.oic_margin}")
        if self.soft_nms_sigma <= 0:
            raise StpnError(f"localize: soft_nms_sigma must be > 0, got {self.soft_nms_sigma}")

    def effective(self) -> "LocalizerConfig":
        """This config with the settings that its other settings leave unread put back to the paper's values:
        tcam_threshold under proposal_thresholds, OIC's margin and gamma under mean scoring, soft_nms_sigma
        under hard NMS and nms_threshold under soft-NMS. Configs with equal `effective()` give the same
        detections (every engine reads these settings only where the others select them)."""
        unread = {}
        if self.proposal_thresholds:
            unread["tcam_threshold"] = PAPER["tcam_threshold"]
        if self.scoring != "oic":
            unread.update(oic_margin=PAPER["oic_margin"], oic_gamma=PAPER["oic_gamma"])
        if self.nms == "soft":
            unread["nms_threshold"] = PAPER["nms_threshold"]
        else:
            unread["soft_nms_sigma"] = PAPER["soft_nms_sigma"]
        return self.replace(**unread)

    @property
    def thresholds(self) -> tuple[float, ...]:
        """The proposal thresholds in effect (the paper's single tcam_threshold unless a list is set)."""
        return self.proposal_thresholds or (float(self.tcam_threshold),)

    def structure(self) -> tuple:
        """What the compiled graph depends on; configs with equal structure share one compile."""
        return (int(self.interpolation), len(self.thresholds), self.max_detections,
                self.max_components_per_class, self.max_classes_per_video)

    @classmethod
    def from_dict(cls, values: Mapping) -> "LocalizerConfig":
        """From a mapping of (a subset of) the fields; max_classes_per_video 0 means all classes."""
        fields = {f.name: f.type for f in dataclasses.fields(cls)}
        unknown = set(values) - set(fields)
        if unknown:
            raise StpnError(f"localize: unknown settings {sorted(unknown)}; known: {sorted(fields)}")
        kwargs = dict(values)
        if kwargs.get("max_classes_per_video") == 0:
            kwargs["max_classes_per_video"] = None
        try:
            for name in ("interpolation", "max_detections", "max_components_per_class", "detections_per_video"):
                if name in kwargs:
                    kwargs[name] = int(kwargs[name])
            for name in ("class_threshold", "tcam_threshold", "alpha", "nms_threshold", "oic_margin", "oic_gamma",
                         "soft_nms_sigma", "min_score"):
                if name in kwargs:
                    kwargs[name] = float(kwargs[name])
            if "proposal_thresholds" in kwargs:
                kwargs["proposal_thresholds"] = tuple(float(t) for t in kwargs["proposal_thresholds"])
        except (TypeError, ValueError) as error:
            raise StpnError(f"localize: a setting has the wrong type ({error})") from None
        if "normalize" in kwargs:
            if not isinstance(kwargs["normalize"], (bool, int)):
                raise StpnError(f"localize: normalize must be true or false, got {kwargs['normalize']!r}")
            kwargs["normalize"] = bool(kwargs["normalize"])
        return cls(**kwargs)

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        values["proposal_thresholds"] = list(self.proposal_thresholds)
        return values

    def replace(self, **changes) -> "LocalizerConfig":
        return dataclasses.replace(self, **changes)

