"""The two terms of the STPN loss (eq. 2) as plain functions of tensors."""

from __future__ import annotations

from keras import ops


def classification_loss(labels, logits):
    """Sigmoid cross-entropy against multi-hot video labels, averaged over classes and batch.

    Args:
        labels: `[B, C]` multi-hot float labels.
        logits: `[B, C]` video-level logits.

    Returns:
        Scalar loss.
    """
    labels = ops.cast(labels, logits.dtype)
    # Numerically stable form of -y log(sigmoid(z)) - (1 - y) log(1 - sigmoid(z)).
    per_entry = ops.maximum(logits, 0.0) - logits * labels + ops.log1p(ops.exp(-ops.abs(logits)))
    return ops.mean(per_entry)


def sparsity_loss(attention, mask=None):
    """L1 norm of the attention weights per video (eq. 2), averaged over the batch.

    Args:
        attention: `[B, T]` attention weights (non-negative, so the L1 norm is their sum).
        mask: optional `[B, T]` with 1 for real snippets and 0 for padding.

    Returns:
        Scalar loss.
    """
    if mask is not None:
        attention = attention * ops.cast(mask, attention.dtype)
    return ops.mean(ops.sum(ops.abs(attention), axis=-1))
