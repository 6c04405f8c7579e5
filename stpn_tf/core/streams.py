"""The stream names: which streams a model set or a localization run has, and the role each plays in eq. 7.

Pure Python, no TensorFlow.
"""

from __future__ import annotations

from collections.abc import Sequence

from stpn_tf.core.errors import StpnError

TWO_STREAMS = ("rgb", "flow")
SINGLE_STREAMS = ("rgb", "flow", "joint")


def check_streams(streams: Sequence[str]) -> tuple[str, ...]:
    """The stream tuple of a module or localization run: rgb,flow or one of rgb, flow, joint."""
    streams = tuple(streams)
    if streams == ("flow", "rgb"):
        streams = TWO_STREAMS
    if streams != TWO_STREAMS and not (len(streams) == 1 and streams[0] in SINGLE_STREAMS):
        raise StpnError(f"streams must be rgb,flow or one of rgb, flow, joint; got {','.join(streams)}")
    return streams


def stream_roles(streams: Sequence[str]) -> tuple[str, str]:
    """Which stream plays the RGB and which the flow role of eq. 7 (one stream alone plays both)."""
    streams = check_streams(streams)
    return TWO_STREAMS if len(streams) == 2 else (streams[0], streams[0])
