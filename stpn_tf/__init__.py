"""stpn_tf: Sparse Temporal Pooling Network (CVPR 2018) in TensorFlow 2 / Keras 3."""

__version__ = "0.1.0"
