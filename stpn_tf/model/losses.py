"""The two terms of the STPN loss (eq. 2), and W-TALC's top-k MIL loss (an option), as plain functions of tensors."""

from __future__ import annotations

import math

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


def topk_mil_loss(labels, snippet_logits, mask=None, divisor: int = 8):
    """W-TALC's multiple-instance loss: softmax cross-entropy of the top-k mean snippet logits.

    Per video and class the video score is the mean of the k = ceil(n / divisor) largest snippet logits,
    n the video's real snippets; the loss is the cross-entropy of softmax(scores) against the labels
    normalised to sum 1 (videos without labels contribute 0), averaged over the batch.

    Args:
        labels: `[B, C]` multi-hot labels.
        snippet_logits: `[B, T, C]` class logits per snippet (the T-CAM plus the classifier bias).
        mask: optional `[B, T]`, 1 for real snippets.
        divisor: 8 in W-TALC.

    Returns:
        Scalar loss.
    """
    logits = ops.convert_to_tensor(snippet_logits)
    labels = ops.cast(labels, logits.dtype)
    t = ops.shape(logits)[1]
    if mask is None:
        mask = ops.ones(ops.shape(logits)[:2], logits.dtype)
    mask = ops.cast(mask, logits.dtype)
    n = ops.sum(mask, axis=1)                                                           # [B]
    k = ops.maximum(ops.ceil(n / float(divisor)), 1.0)
    # Padding sorts last: it gets the smallest finite value of the video minus 1 (never among the top k).
    low = ops.min(logits, axis=1, keepdims=True) - 1.0
    masked = ops.where(mask[..., None] > 0, logits, low)
    ranked = -ops.sort(-ops.transpose(masked, (0, 2, 1)), axis=-1)                    # [B, C, T] descending
    take = ops.cast(ops.arange(t)[None, :] < ops.cast(k, "int32")[:, None], logits.dtype)  # [B, T]
    scores = ops.sum(ranked * take[:, None, :], axis=-1) / k[:, None]                 # [B, C]
    total = ops.sum(labels, axis=1, keepdims=True)
    target = labels / ops.maximum(total, 1.0)
    log_softmax = scores - ops.logsumexp(scores, axis=1, keepdims=True)
    return ops.mean(-ops.sum(target * log_softmax, axis=1))
