"""Ground truth for evaluation, figures and labels: one rule for what a path and a subset name mean.

- A folder is the THUMOS14 toolkit's ground truth (`<Class>_val.txt` / `<Class>_test.txt`, Ambiguous
  segments); anything else is an ActivityNet-layout JSON file (also BaS-Net's `gt.json` and the
  `ground_truth.json` of a built dataset).
- Subset names: the name as the source spells it first; otherwise its spelling variants (`val` /
  `validation`, `train` / `training`, `test` / `testing`). For the toolkit folder `train` also names the
  validation videos, which THUMOS14 trains on (spec section 5), so a dataset's split names work there too.
- `stpn:<path>` names a file shipped with the package (stpn_tf.core.resources).
"""

from __future__ import annotations

import os

from stpn_tf.core import resources
from stpn_tf.artifacts import annotations
from stpn_tf.artifacts.annotations import VideoRecord
from stpn_tf.core.errors import StpnError

# Spellings of one subset; the first of a group is tried first for the toolkit folder.
_VARIANTS = (("validation", "val", "valid"), ("train", "training"), ("test", "testing"))
_TOOLKIT_SUBSETS = {"test": "test", "testing": "test", "validation": "validation", "val": "validation",
                    "valid": "validation", "train": "validation", "training": "validation"}


def subset_variants(subset: str) -> tuple[str, ...]:
    """`subset` followed by its other spellings."""
    for group in _VARIANTS:
        if subset in group:
            return (subset,) + tuple(s for s in group if s != subset)
    return (subset,)


def toolkit_subset(subset: str | None) -> str:
    """The toolkit folder's subset ("test" or "validation") for a user's subset name (default test)."""
    if subset is None:
        return "test"
    try:
        return _TOOLKIT_SUBSETS[subset]
    except KeyError:
        raise StpnError(f"unknown THUMOS14 subset {subset!r}; expected test or validation (val, train)") from None


def resolve_json_subset(path: str, subset: str, present: set[str]) -> str:
    """The subset of a JSON file that `subset` names (itself or a spelling variant)."""
    for name in subset_variants(subset):
        if name in present:
            return name
    raise StpnError(f"{path}: no videos in subset {subset!r}; subsets present: {sorted(present)}")


def load_ground_truth(path: str, subset: str | None = None, *, single_subset: bool = True) -> list[VideoRecord]:
    """Ground truth records from a toolkit folder or an ActivityNet-layout JSON file.

    Args:
      path: Toolkit folder, JSON file, or `stpn:<shipped path>`.
      subset: Subset to keep (see the module docstring); None = the toolkit's test subset, or for JSON
        every video.
      single_subset: With `subset=None`, a JSON file holding several subsets is an error (evaluating
        against the training and test videos at once is almost always a mistake).
    """
    path = resources.resolve(path)
    if os.path.isdir(path):
        return annotations.read_thumos14_toolkit(path, toolkit_subset(subset))
    records = annotations.read_activitynet_json(path)
    present = {r.subset for r in records}
    if subset is None:
        if single_subset and len(present) > 1:
            raise StpnError(f"{path}: holds subsets {sorted(present)}; choose one with --subset")
        return records
    chosen = resolve_json_subset(path, subset, present)
    return [r for r in records if r.subset == chosen]


def segments_by_video(path: str | None, subset: str | None = None) -> dict[str, list[annotations.Segment]]:
    """{video_id: segments} of a ground truth (empty without a path), e.g. for figures."""
    if path is None:
        return {}
    return {r.video_id: list(r.segments) for r in load_ground_truth(path, subset, single_subset=False)}
