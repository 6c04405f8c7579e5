"""stpn_tf: Sparse Temporal Pooling Network (CVPR 2018) in TensorFlow 2 / Keras 3.

The public Python API (README "Python API"); `import stpn_tf` is light, TensorFlow loads with `load`:

  load(path, *, localizer_config=None) -> Model   a training work directory (with the localization settings
                                                  it records, as `stpn localize` uses) or an `stpn export`
  Model.localize({video: {"rgb": [T, D], "flow": [T, D]}}, seconds_per_snippet=...) -> ActivityNet results
  evaluate(detections, ground_truth, *, subset=None, protocol="activitynet", ...) -> {"mAP", "average_mAP", ...}
  load_ground_truth(path, subset=None) -> ground-truth records (ActivityNet JSON, toolkit folder, `stpn:`)
  StpnError                                       every error about bad input (one line, naming the file)
"""

__version__ = "0.1.0"

__all__ = ["Model", "StpnError", "evaluate", "load", "load_ground_truth", "__version__"]

_API = {"Model": "stpn_tf.workflows.api", "load": "stpn_tf.workflows.api", "evaluate": "stpn_tf.workflows.api",
        "load_ground_truth": "stpn_tf.artifacts.ground_truth", "StpnError": "stpn_tf.core.errors"}


def __getattr__(name: str):
    # Lazy (PEP 562): importing the package must not import TensorFlow (the CLI answers --help without it).
    if name in _API:
        import importlib

        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'stpn_tf' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
