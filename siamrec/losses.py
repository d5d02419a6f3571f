"""Metric-learning losses for multi-label embeddings, written with ``keras.ops``.

Every batch loss has the signature ``fn(labels, embeddings, **params) -> scalar``:

* ``labels``: ``(batch, n_labels)`` multi-hot matrix (0/1 float, int or bool;
  any non-zero entry counts as "has the label"). Single-label data is one-hot.
* ``embeddings``: ``(batch, d)`` float tensor. Each loss L2-normalises the
  embeddings itself, so the model does not need a normalisation layer; all
  computations are done in float32.

Pairs ``(i, j)`` with ``i != j`` are classified by :func:`pair_masks`:
*positive* when they share at least one label (``positive="shared"``) or when
their label-set Jaccard index is ``>= jaccard_threshold`` (``positive="jaccard"``),
*negative* when they share no label; remaining pairs (only possible with the
Jaccard rule) are ignored. The triplet and multi-similarity losses return
exactly 0 (with finite gradients) on a batch without a positive pair; the
contrastive loss still averages its negative pairs there.

For ``model.compile`` use one of the :class:`MetricLoss` classes (``TripletSemihard``, ``TripletHard``,
``Contrastive``, ``MultiSimilarity``; conf/loss/*.yaml holds their settings), with ``y_true`` = multi-hot labels
and ``y_pred`` = embeddings.
"""

from typing import Annotated, Literal

import keras
from keras import ops

from siamrec.schema import number

_NORM_EPS = 1e-12


def _l2_normalize(embeddings):
    """Cast to float32 and L2-normalise the rows (zero rows stay zero)."""
    x = ops.cast(embeddings, "float32")
    sq_norm = ops.sum(ops.square(x), axis=1, keepdims=True)
    return x * ops.rsqrt(ops.maximum(sq_norm, _NORM_EPS))


def _safe_sqrt(x):
    """``sqrt(x)`` with value and gradient 0 where ``x <= 0`` (no NaN/inf)."""
    positive = ops.greater(x, 0.0)
    return ops.where(positive, ops.sqrt(ops.where(positive, x, 1.0)), 0.0)


def _squared_distances(x):
    """Pairwise squared Euclidean distances, clamped at 0, with a zero diagonal."""
    sq_norm = ops.sum(ops.square(x), axis=1)
    d2 = sq_norm[:, None] + sq_norm[None, :] - 2.0 * ops.matmul(x, ops.transpose(x))
    d2 = ops.maximum(d2, 0.0)
    return d2 * (1.0 - ops.eye(ops.shape(x)[0], dtype="float32"))


def _masked_max(x, mask, axis):
    """Max of ``x`` over ``mask`` along ``axis`` (keepdims); the plain min if the mask is empty."""
    fill = ops.min(x, axis=axis, keepdims=True)
    return ops.max(ops.where(mask, x, fill), axis=axis, keepdims=True)


def _masked_min(x, mask, axis):
    """Min of ``x`` over ``mask`` along ``axis`` (keepdims); the plain max if the mask is empty."""
    fill = ops.max(x, axis=axis, keepdims=True)
    return ops.min(ops.where(mask, x, fill), axis=axis, keepdims=True)


def _masked_mean(values, mask):
    """Mean of ``values`` over ``mask``; 0 (with zero gradient) if the mask is empty."""
    count = ops.sum(ops.cast(mask, "float32"))
    return ops.sum(ops.where(mask, values, 0.0)) / ops.maximum(count, 1.0)


def pair_masks(labels, positive="shared", jaccard_threshold=0.5):
    """Boolean ``(batch, batch)`` masks of positive and negative pairs.

    Args:
        labels: ``(batch, n_labels)`` multi-hot matrix; non-zero means present.
        positive: ``"shared"`` (pair shares >= 1 label) or ``"jaccard"``
            (Jaccard index of the two label sets >= ``jaccard_threshold``).
        jaccard_threshold: threshold in ``(0, 1]`` for ``positive="jaccard"``.

    Returns:
        ``(positive_mask, negative_mask)``. Both exclude the diagonal. Negative
        pairs share no label (an item without any label is negative to all
        others). They are disjoint; pairs in neither mask are ignored.
    """
    if positive not in ("shared", "jaccard"):
        raise ValueError(f"positive must be 'shared' or 'jaccard', got {positive!r}")
    if not 0.0 < jaccard_threshold <= 1.0:
        raise ValueError(f"jaccard_threshold must be in (0, 1], got {jaccard_threshold}")
    y = ops.cast(ops.not_equal(labels, 0), "float32")
    shared = ops.matmul(y, ops.transpose(y))
    off_diagonal = ops.logical_not(ops.cast(ops.eye(ops.shape(y)[0]), "bool"))
    negative = ops.logical_and(ops.equal(shared, 0.0), off_diagonal)
    if positive == "shared":
        is_positive = ops.greater(shared, 0.0)
    else:
        count = ops.sum(y, axis=1)
        union = count[:, None] + count[None, :] - shared
        is_positive = ops.greater_equal(shared / ops.maximum(union, 1.0), jaccard_threshold)
    return ops.logical_and(is_positive, off_diagonal), negative


def triplet_semihard(
    labels,
    embeddings,
    margin=1.0,
    distance="squared_l2",
    positive="shared",
    jaccard_threshold=0.5,
):
    """Triplet loss with semi-hard negative mining (tensorflow-addons semantics).

    For every anchor-positive pair ``(a, p)`` the negative is the closest
    negative farther than the positive (``d_an > d_ap``); if there is none,
    the anchor's farthest negative; if the anchor has no negative at all, 0
    (what TFA's masked maximum yields). The loss is the sum of
    ``max(d_ap - d_an + margin, 0)`` over anchor-positive pairs (both orders)
    divided by their number; 0 if the batch has no positive pair (TFA: NaN).
    Memory is O(batch**3), as in TFA.

    Args:
        labels: ``(batch, n_labels)`` multi-hot labels.
        embeddings: ``(batch, d)`` embeddings, L2-normalised here.
        margin: margin of the triplet hinge.
        distance: ``"squared_l2"`` (TFA's default) or ``"l2"`` (Euclidean).
        positive, jaccard_threshold: pair definition, see :func:`pair_masks`.
    """
    if distance not in ("squared_l2", "l2"):
        raise ValueError(f"distance must be 'squared_l2' or 'l2', got {distance!r}")
    pos, neg = pair_masks(labels, positive, jaccard_threshold)
    dist = _squared_distances(_l2_normalize(embeddings))
    if distance == "l2":
        dist = _safe_sqrt(dist)
    # Axis order (anchor, positive, negative).
    d_an = dist[:, None, :]
    semihard = ops.logical_and(neg[:, None, :], ops.greater(d_an, dist[:, :, None]))
    row_max = ops.max(dist, axis=1, keepdims=True)[:, :, None]
    closest_farther = ops.min(ops.where(semihard, d_an, row_max), axis=2)
    farthest = _masked_max(dist, neg, axis=1)
    d_neg = ops.where(ops.any(semihard, axis=2), closest_farther, farthest)
    hinge = ops.maximum(dist - d_neg + margin, 0.0)
    return _masked_mean(hinge, pos)


def triplet_hard(
    labels,
    embeddings,
    margin=0.2,
    soft=False,
    positive="shared",
    jaccard_threshold=0.5,
):
    """Batch-hard triplet loss (Hermans et al., 2017) on Euclidean distances.

    For each anchor with at least one positive and one negative, take its
    farthest positive and closest negative; the loss is the mean over those
    anchors of ``max(d_ap - d_an + margin, 0)``, or ``softplus(d_ap - d_an)``
    if ``soft``. 0 if no anchor qualifies.

    Args:
        labels: ``(batch, n_labels)`` multi-hot labels.
        embeddings: ``(batch, d)`` embeddings, L2-normalised here.
        margin: hinge margin (distances of unit vectors lie in ``[0, 2]``).
        soft: use the soft-margin (softplus) variant; ``margin`` is unused then.
        positive, jaccard_threshold: pair definition, see :func:`pair_masks`.
    """
    pos, neg = pair_masks(labels, positive, jaccard_threshold)
    dist = _safe_sqrt(_squared_distances(_l2_normalize(embeddings)))
    gap = _masked_max(dist, pos, axis=1) - _masked_min(dist, neg, axis=1)
    per_anchor = ops.softplus(gap) if soft else ops.maximum(gap + margin, 0.0)
    valid = ops.logical_and(
        ops.any(pos, axis=1, keepdims=True), ops.any(neg, axis=1, keepdims=True)
    )
    return _masked_mean(per_anchor, valid)


def contrastive_pair_loss(y_true, y_pred, margin=1.0):
    """Elementwise contrastive loss, identical to TFA's ``contrastive_loss``.

    ``y_true * d**2 + (1 - y_true) * max(margin - d, 0)**2`` where ``y_pred = d``
    is the distance of a pair and ``y_true = 1`` marks a similar pair.
    """
    d = ops.convert_to_tensor(y_pred)
    y = ops.cast(y_true, d.dtype)
    return y * ops.square(d) + (1.0 - y) * ops.square(ops.maximum(margin - d, 0.0))


def contrastive(labels, embeddings, margin=1.0, positive="shared", jaccard_threshold=0.5):
    """Contrastive loss averaged over all positive and negative pairs ``i < j``.

    Applies :func:`contrastive_pair_loss` to the Euclidean distance of every
    non-ignored pair (``y = 1`` for positive, ``0`` for negative pairs). With
    L2-normalised embeddings distances lie in ``[0, 2]``, so the default
    ``margin=1.0`` pushes negatives to at least a 60-degree angle. 0 if the
    batch has no positive pair (like the other losses: such a batch teaches
    nothing about similarity).

    Args:
        labels: ``(batch, n_labels)`` multi-hot labels.
        embeddings: ``(batch, d)`` embeddings, L2-normalised here.
        margin: margin for negative pairs.
        positive, jaccard_threshold: pair definition, see :func:`pair_masks`.
    """
    pos, neg = pair_masks(labels, positive, jaccard_threshold)
    dist = _safe_sqrt(_squared_distances(_l2_normalize(embeddings)))
    upper = ops.cast(ops.triu(ops.ones_like(dist), k=1), "bool")
    valid = ops.logical_and(ops.logical_or(pos, neg), upper)
    loss = _masked_mean(contrastive_pair_loss(pos, dist, margin), valid)
    return ops.where(ops.any(pos), loss, ops.zeros_like(loss))


def _masked_log1p_sum_exp(z, mask):
    """Row-wise ``log(1 + sum(exp(z) over mask))``, computed stably."""
    shift = ops.stop_gradient(
        ops.maximum(ops.max(ops.where(mask, z, 0.0), axis=1, keepdims=True), 0.0)
    )
    terms = ops.where(mask, ops.exp(ops.where(mask, z, 0.0) - shift), 0.0)
    total = ops.exp(-shift) + ops.sum(terms, axis=1, keepdims=True)
    return ops.squeeze(shift + ops.log(total), axis=1)


def multi_similarity(
    labels,
    embeddings,
    alpha=2.0,
    beta=50.0,
    base=0.5,
    epsilon=0.1,
    positive="shared",
    jaccard_threshold=0.5,
):
    """Multi-similarity loss with its pair mining (Wang et al., 2019).

    With cosine similarities ``S``, anchor ``i`` keeps negatives with
    ``S_in > min_p S_ip - epsilon`` and positives with
    ``S_ip < max_n S_in + epsilon`` (an anchor without positives keeps no
    negative and vice versa, as in pytorch-metric-learning), and contributes
    ``log(1 + sum_P exp(-alpha (S_ip - base))) / alpha
    + log(1 + sum_N exp(beta (S_in - base))) / beta``.
    The loss is the mean over all anchors of the batch (anchors without mined
    pairs contribute 0), hence 0 without positive pairs.

    Args:
        labels: ``(batch, n_labels)`` multi-hot labels.
        embeddings: ``(batch, d)`` embeddings, L2-normalised here.
        alpha, beta: scales of the positive and negative terms.
        base: similarity offset (lambda in the paper).
        epsilon: mining margin.
        positive, jaccard_threshold: pair definition, see :func:`pair_masks`.
    """
    pos, neg = pair_masks(labels, positive, jaccard_threshold)
    x = _l2_normalize(embeddings)
    sim = ops.matmul(x, ops.transpose(x))
    # Empty sets give min = +inf / max = -inf, so nothing is kept for them.
    min_pos = ops.min(ops.where(pos, sim, float("inf")), axis=1, keepdims=True)
    max_neg = ops.max(ops.where(neg, sim, float("-inf")), axis=1, keepdims=True)
    kept_neg = ops.logical_and(neg, ops.greater(sim, min_pos - epsilon))
    kept_pos = ops.logical_and(pos, ops.less(sim, max_neg + epsilon))
    pos_term = _masked_log1p_sum_exp(-alpha * (sim - base), kept_pos) / alpha
    neg_term = _masked_log1p_sum_exp(beta * (sim - base), kept_neg) / beta
    return ops.mean(pos_term + neg_term)


class MetricLoss(keras.losses.Loss):
    """Base of the losses a Siamese head trains with: ``y_true`` are the multi-hot labels, ``y_pred`` the
    embeddings, the result one scalar per batch (``sample_weight`` is not meaningful).

    A loss is a component like any other: a subclass whose constructor's typed keyword parameters are its settings
    (siamrec.schema checks them from the signature) and a YAML ``conf/loss/NAME.yaml`` naming it by ``_target_``
    with their values; ``model.loss=NAME`` chooses it, ``model.loss.PARAM=...`` sets one. A subclass implements
    ``compute(labels, embeddings)``; its parameters are kept in ``self.params`` (its Keras config).
    """

    def __init__(self, **params):
        self.params = params
        name = "".join(f"_{c.lower()}" if c.isupper() else c for c in type(self).__name__).lstrip("_")
        super().__init__(name=name, reduction="sum", dtype="float32")

    def compute(self, labels, embeddings):
        raise NotImplementedError

    def call(self, y_true, y_pred):
        return self.compute(y_true, y_pred)

    def get_config(self):
        return dict(self.params)

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def build_loss(loss_cfg) -> MetricLoss:
    """The loss of `model.loss` (its YAML: `_target_` and settings); a bad one is a ValueError naming it."""
    from hydra.utils import instantiate

    try:
        loss = instantiate(loss_cfg)
    except Exception as exc:  # noqa: BLE001 - hydra wraps the constructor's TypeError
        reason = " ".join(str(exc.__cause__ or exc).split())
        raise ValueError(f"model.loss: cannot build {dict(loss_cfg).get('_target_')} ({reason})") from None
    if not isinstance(loss, keras.losses.Loss):
        raise ValueError(f"model.loss: {dict(loss_cfg).get('_target_')} is not a Keras loss")
    return loss


Positive = Literal["shared", "jaccard"]
Threshold = Annotated[float, number(0, 1, lo_open=True)]
Margin = Annotated[float, number(0)]


@keras.saving.register_keras_serializable(package="siamrec")
class TripletSemihard(MetricLoss):
    """Triplet loss with semi-hard negative mining (:func:`triplet_semihard`)."""

    def __init__(self, *, margin: Margin, distance: Literal["squared_l2", "l2"], positive: Positive,
                 jaccard_threshold: Threshold):
        super().__init__(margin=margin, distance=distance, positive=positive, jaccard_threshold=jaccard_threshold)

    def compute(self, labels, embeddings):
        return triplet_semihard(labels, embeddings, **self.params)


@keras.saving.register_keras_serializable(package="siamrec")
class TripletHard(MetricLoss):
    """Batch-hard triplet loss (:func:`triplet_hard`)."""

    def __init__(self, *, margin: Margin, soft: bool, positive: Positive, jaccard_threshold: Threshold):
        super().__init__(margin=margin, soft=soft, positive=positive, jaccard_threshold=jaccard_threshold)

    def compute(self, labels, embeddings):
        return triplet_hard(labels, embeddings, **self.params)


@keras.saving.register_keras_serializable(package="siamrec")
class Contrastive(MetricLoss):
    """Contrastive loss over all pairs (:func:`contrastive`)."""

    def __init__(self, *, margin: Margin, positive: Positive, jaccard_threshold: Threshold):
        super().__init__(margin=margin, positive=positive, jaccard_threshold=jaccard_threshold)

    def compute(self, labels, embeddings):
        return contrastive(labels, embeddings, **self.params)


@keras.saving.register_keras_serializable(package="siamrec")
class MultiSimilarity(MetricLoss):
    """Multi-similarity loss with its pair mining (:func:`multi_similarity`)."""

    def __init__(self, *, alpha: Annotated[float, number(0, lo_open=True)],
                 beta: Annotated[float, number(0, lo_open=True)], base: float,
                 epsilon: Annotated[float, number(0)], positive: Positive, jaccard_threshold: Threshold):
        super().__init__(alpha=alpha, beta=beta, base=base, epsilon=epsilon, positive=positive,
                         jaccard_threshold=jaccard_threshold)

    def compute(self, labels, embeddings):
        return multi_similarity(labels, embeddings, **self.params)
