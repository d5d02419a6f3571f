"""Tests for siamrec.losses against brute-force NumPy references written from the definitions."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from siamrec import losses

# the loss functions by their config names (conf/loss/NAME.yaml builds the class wrapping each)
FUNCTIONS = {"triplet_semihard": losses.triplet_semihard, "triplet_hard": losses.triplet_hard,
             "contrastive": losses.contrastive, "multi_similarity": losses.multi_similarity}


def loss_from_yaml(name, **params):
    """The loss `model.loss=NAME` builds: conf/loss/NAME.yaml with `params` over it."""
    from pathlib import Path

    from omegaconf import OmegaConf

    cfg = OmegaConf.load(Path(__file__).resolve().parent.parent / "conf" / "loss" / f"{name}.yaml")
    return losses.build_loss(OmegaConf.merge(cfg, params))

# ---------------------------------------------------------------------------
# Brute-force references: explicit loops, float64, no code shared with siamrec.
# ---------------------------------------------------------------------------


def ref_pairs(labels, positive="shared", jaccard_threshold=0.5):
    """Return (is_positive, is_negative) as Python functions of (i, j)."""
    sets = [set(np.flatnonzero(row)) for row in np.asarray(labels)]

    def is_negative(i, j):
        return i != j and not (sets[i] & sets[j])

    def is_positive(i, j):
        if i == j:
            return False
        shared = len(sets[i] & sets[j])
        if positive == "shared":
            return shared >= 1
        union = len(sets[i] | sets[j])
        return union > 0 and shared / union >= jaccard_threshold

    return is_positive, is_negative


def ref_unit(embeddings):
    e = np.asarray(embeddings, dtype=np.float64)
    return [row / math.sqrt(sum(v * v for v in row)) for row in e]


def ref_sq_dist(u, i, j):
    return sum((a - b) ** 2 for a, b in zip(u[i], u[j]))


def ref_triplet_semihard(labels, embeddings, margin=1.0, distance="squared_l2", **pair_kw):
    is_pos, is_neg = ref_pairs(labels, **pair_kw)
    u = ref_unit(embeddings)
    n = len(u)

    def d(i, j):
        sq = ref_sq_dist(u, i, j)
        return sq if distance == "squared_l2" else math.sqrt(sq)

    total, count = 0.0, 0
    for a in range(n):
        for p in range(n):
            if not is_pos(a, p):
                continue
            count += 1
            negatives = [d(a, k) for k in range(n) if is_neg(a, k)]
            farther = [v for v in negatives if v > d(a, p)]
            if farther:
                d_an = min(farther)
            elif negatives:
                d_an = max(negatives)
            else:
                d_an = 0.0
            total += max(d(a, p) - d_an + margin, 0.0)
    return total / count if count else 0.0


def ref_triplet_hard(labels, embeddings, margin=0.2, soft=False, **pair_kw):
    is_pos, is_neg = ref_pairs(labels, **pair_kw)
    u = ref_unit(embeddings)
    n = len(u)
    per_anchor = []
    for a in range(n):
        d_pos = [math.sqrt(ref_sq_dist(u, a, k)) for k in range(n) if is_pos(a, k)]
        d_neg = [math.sqrt(ref_sq_dist(u, a, k)) for k in range(n) if is_neg(a, k)]
        if not d_pos or not d_neg:
            continue
        gap = max(d_pos) - min(d_neg)
        per_anchor.append(math.log1p(math.exp(gap)) if soft else max(gap + margin, 0.0))
    return sum(per_anchor) / len(per_anchor) if per_anchor else 0.0


def ref_contrastive(labels, embeddings, margin=1.0, **pair_kw):
    is_pos, is_neg = ref_pairs(labels, **pair_kw)
    u = ref_unit(embeddings)
    n = len(u)
    values = []
    if not any(is_pos(i, j) for i in range(n) for j in range(i + 1, n)):
        return 0.0  # no positive pair: nothing to learn, by definition 0 (as every loss here)
    for i in range(n):
        for j in range(i + 1, n):
            if not (is_pos(i, j) or is_neg(i, j)):
                continue
            y = 1.0 if is_pos(i, j) else 0.0
            d = math.sqrt(ref_sq_dist(u, i, j))
            values.append(y * d**2 + (1 - y) * max(margin - d, 0.0) ** 2)
    return sum(values) / len(values) if values else 0.0


def ref_multi_similarity(labels, embeddings, alpha=2.0, beta=50.0, base=0.5, epsilon=0.1, **pair_kw):
    is_pos, is_neg = ref_pairs(labels, **pair_kw)
    u = ref_unit(embeddings)
    n = len(u)
    total = 0.0
    for i in range(n):
        s_pos = [float(np.dot(u[i], u[k])) for k in range(n) if is_pos(i, k)]
        s_neg = [float(np.dot(u[i], u[k])) for k in range(n) if is_neg(i, k)]
        if not s_pos or not s_neg:
            continue  # min/max over an empty set: nothing is mined, the anchor adds 0
        kept_neg = [s for s in s_neg if s > min(s_pos) - epsilon]
        kept_pos = [s for s in s_pos if s < max(s_neg) + epsilon]
        pos_term = math.log(1 + sum(math.exp(-alpha * (s - base)) for s in kept_pos)) / alpha
        neg_term = math.log(1 + sum(math.exp(beta * (s - base)) for s in kept_neg)) / beta
        total += pos_term + neg_term
    return total / n


REFERENCES = {
    "triplet_semihard": ref_triplet_semihard,
    "triplet_hard": ref_triplet_hard,
    "contrastive": ref_contrastive,
    "multi_similarity": ref_multi_similarity,
}

# ---------------------------------------------------------------------------
# Random batches
# ---------------------------------------------------------------------------


def single_label_batch(seed, batch=12, n_classes=4, dim=6):
    rng = np.random.default_rng(seed)
    ints = rng.integers(0, n_classes, size=batch)
    labels = np.eye(n_classes, dtype="float32")[ints]
    return labels, rng.normal(size=(batch, dim)).astype("float32")


def multi_label_batch(seed, batch=12, n_labels=5, dim=6):
    rng = np.random.default_rng(seed)
    labels = (rng.random((batch, n_labels)) < 0.3).astype("float32")
    labels[np.arange(batch), rng.integers(0, n_labels, size=batch)] = 1.0
    return labels, rng.normal(size=(batch, dim)).astype("float32")


def batch_with_anchors_lacking_negatives(seed, batch=10, dim=6):
    """Items 0 and 1 carry every label, so they have positives but no negatives."""
    labels, emb = multi_label_batch(seed, batch=batch, dim=dim)
    labels[:2] = 1.0
    return labels, emb


BATCHES = (
    [pytest.param(*single_label_batch(s), id=f"single-{s}") for s in range(3)]
    + [pytest.param(*multi_label_batch(s), id=f"multi-{s}") for s in range(3)]
    + [pytest.param(*batch_with_anchors_lacking_negatives(s), id=f"no-neg-{s}") for s in range(2)]
)

PARAMS = {
    "triplet_semihard": [{}, {"margin": 0.3}, {"distance": "l2"}],
    "triplet_hard": [{}, {"margin": 0.5}, {"soft": True}],
    "contrastive": [{}, {"margin": 1.5}],
    "multi_similarity": [{}, {"alpha": 1.0, "beta": 10.0, "base": 0.3, "epsilon": 0.3}],
}
CASES = [
    pytest.param(name, p, id=f"{name}-{i}") for name, ps in PARAMS.items() for i, p in enumerate(ps)
]


def value_and_grad(name, labels, embeddings, **params):
    x = tf.Variable(embeddings)
    with tf.GradientTape() as tape:
        value = FUNCTIONS[name](labels, x, **params)
    grad = tape.gradient(value, x)
    return float(value), (np.zeros_like(embeddings) if grad is None else grad.numpy())


@pytest.mark.parametrize("labels,embeddings", BATCHES)
@pytest.mark.parametrize("name,params", CASES)
def test_matches_reference_with_finite_gradient(name, params, labels, embeddings):
    value, grad = value_and_grad(name, labels, embeddings, **params)
    expected = REFERENCES[name](labels, embeddings, **params)
    assert value == pytest.approx(expected, rel=1e-5, abs=1e-5)
    assert np.all(np.isfinite(grad))


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_jaccard_positives_match_reference(name):
    labels, embeddings = multi_label_batch(7, batch=14)
    params = {"positive": "jaccard", "jaccard_threshold": 0.5}
    value, _ = value_and_grad(name, labels, embeddings, **params)
    assert value == pytest.approx(REFERENCES[name](labels, embeddings, **params), rel=1e-5, abs=1e-5)


def test_single_label_int_labels_are_same_vs_different_class():
    ints = np.array([0, 0, 1, 2, 1, 2])
    pos, neg = losses.pair_masks(np.eye(3)[ints])
    same = ints[:, None] == ints[None, :]
    off = ~np.eye(6, dtype=bool)
    np.testing.assert_array_equal(np.asarray(pos), same & off)
    np.testing.assert_array_equal(np.asarray(neg), ~same)


def test_jaccard_pairs_in_neither_mask_are_ignored():
    labels = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 0, 1]], dtype=bool)
    pos, neg = losses.pair_masks(labels, positive="jaccard", jaccard_threshold=0.6)
    # Jaccard(0,1) = 1/2 and (1,2) = 1/3 are below 0.6: shared label, so not negative either.
    assert not pos[0, 1] and not neg[0, 1]
    assert pos[0, 2]  # 2/3
    assert neg[1, 3] and not pos[1, 3]


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_no_positive_pair(name):
    labels = np.eye(6, dtype="float32")
    embeddings = np.random.default_rng(0).normal(size=(6, 4)).astype("float32")
    value, grad = value_and_grad(name, labels, embeddings)
    assert np.all(np.isfinite(grad))
    assert value == 0.0


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_single_item_batch_gives_zero(name):
    value, grad = value_and_grad(name, np.ones((1, 2), "float32"), np.ones((1, 3), "float32"))
    assert value == 0.0 and np.all(np.isfinite(grad))


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_batch_without_negatives(name):
    labels = np.ones((5, 2), dtype="float32")
    embeddings = np.random.default_rng(1).normal(size=(5, 3)).astype("float32")
    value, grad = value_and_grad(name, labels, embeddings)
    assert np.all(np.isfinite(grad))
    assert value == pytest.approx(REFERENCES[name](labels, embeddings), rel=1e-5, abs=1e-6)
    if name in ("triplet_hard", "multi_similarity"):
        assert value == 0.0


@pytest.mark.parametrize("name,params", CASES)
def test_identical_embeddings_have_finite_gradient(name, params):
    labels, _ = single_label_batch(0, batch=8)
    for embeddings in (np.ones((8, 5), "float32"), np.zeros((8, 5), "float32")):
        value, grad = value_and_grad(name, labels, embeddings, **params)
        assert np.isfinite(value) and np.all(np.isfinite(grad))


def test_triplet_semihard_hand_computed():
    # Unit vectors with rational coordinates; classes {A, B} and {C, D}.
    A, B, C, D = (1.0, 0.0), (0.6, 0.8), (5 / 13, 12 / 13), (-1.0, 0.0)
    # Squared distances 2 - 2 * cos:
    #   AB = 0.8, AC = 16/13, AD = 4, BC = 0.8/13, BD = 3.2, CD = 36/13.
    # (A,B): negatives C 16/13, D 4 both farther than 0.8 -> C: 0.8 - 16/13 + 1 = 7.4/13
    # (B,A): C 0.8/13 is closer than 0.8, D 3.2 is farther -> D: 0.8 - 3.2 + 1 < 0 -> 0
    #        (the hardest negative C would have given 1.74: pins semi-hard selection)
    # (C,D): A 16/13 and B 0.8/13 both closer than 36/13 -> farthest A: 20/13 + 1 = 33/13
    # (D,C): A 4, B 3.2 both farther than 36/13 -> B: 36/13 - 3.2 + 1 = 7.4/13
    # Mean over the 4 anchor-positive pairs: (7.4 + 33 + 7.4) / 13 / 4 = 47.8 / 52.
    labels = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], "float32")
    embeddings = np.array([A, B, C, D], "float32")
    value = float(losses.triplet_semihard(labels, embeddings))
    assert value == pytest.approx(47.8 / 52, abs=1e-6)


def test_triplet_semihard_anchor_without_negatives_uses_zero():
    # Item 0 has labels {0, 1}: positive to both others, no negative.
    # Squared distances: 01 = 0.8, 02 = 4, 12 = 3.2.
    # (0,1): 0.8 - 0 + 1 = 1.8; (0,2): 4 - 0 + 1 = 5
    # (1,0): negative 2 at 3.2 > 0.8 -> 0.8 - 3.2 + 1 < 0 -> 0
    # (2,0): negative 1 at 3.2 < 4, no farther one -> 4 - 3.2 + 1 = 1.8
    labels = np.array([[1, 1], [1, 0], [0, 1]], "float32")
    embeddings = np.array([[1.0, 0.0], [0.6, 0.8], [-1.0, 0.0]], "float32")
    value = float(losses.triplet_semihard(labels, embeddings))
    assert value == pytest.approx(8.6 / 4, abs=1e-6)


def test_contrastive_hand_computed():
    # Items 0 and 1 share label A, item 2 has B. Unit vectors: distances d01 = sqrt(0.8), d02 = 2, d12 = sqrt(3.2).
    # Pairs i < j: (0,1) positive: d^2 = 0.8; (0,2) and (1,2) negative: max(margin - d, 0)^2.
    labels = np.array([[1, 0], [1, 0], [0, 1]], "float32")
    embeddings = np.array([[1.0, 0.0], [0.6, 0.8], [-1.0, 0.0]], "float32")
    # margin 1: both negatives are beyond it -> (0.8 + 0 + 0) / 3
    assert float(losses.contrastive(labels, embeddings)) == pytest.approx(0.8 / 3, abs=1e-6)
    # margin 2.5: (0.8 + 0.5^2 + (2.5 - sqrt(3.2))^2) / 3
    expected = (0.8 + 0.25 + (2.5 - math.sqrt(3.2)) ** 2) / 3
    assert float(losses.contrastive(labels, embeddings, margin=2.5)) == pytest.approx(expected, abs=1e-6)
    # scaled embeddings give the same value: the loss normalises them
    assert float(losses.contrastive(labels, 3.0 * embeddings, margin=2.5)) == pytest.approx(expected, abs=1e-6)


def test_multi_similarity_hand_computed():
    # Items 0 and 1 share label A, item 2 has B. Cosines: S01 = 0, S02 = 0.8, S12 = 0.6.
    # Anchor 0: negative 2 kept (0.8 > 0 - 0.1), positive 1 kept (0 < 0.8 + 0.1):
    #   log(1 + e^{-2(0 - 0.5)}) / 2 + log(1 + e^{50(0.8 - 0.5)}) / 50
    # Anchor 1: negative 2 kept (0.6 > -0.1), positive 0 kept (0 < 0.7):
    #   log(1 + e^{1}) / 2 + log(1 + e^{50(0.6 - 0.5)}) / 50
    # Anchor 2 has no positive: 0. The loss is the mean over the 3 anchors.
    labels = np.array([[1, 0], [1, 0], [0, 1]], "float32")
    embeddings = np.array([[1.0, 0.0], [0.0, 1.0], [0.8, 0.6]], "float32")
    expected = (2 * math.log1p(math.e) / 2 + math.log1p(math.exp(15)) / 50 + math.log1p(math.exp(5)) / 50) / 3
    assert float(losses.multi_similarity(labels, embeddings)) == pytest.approx(expected, rel=1e-5)
    # a negative mining margin (-0.7) keeps anchor 0's pairs (0.8 > 0 + 0.7 and 0 < 0.8 - 0.7) but drops both of
    # anchor 1's (0.6 > 0.7 and 0 < 0.6 - 0.7 fail): only anchor 0 contributes
    value = float(losses.multi_similarity(labels, embeddings, epsilon=-0.7))
    expected_tight = (math.log1p(math.e) / 2 + math.log1p(math.exp(15)) / 50) / 3
    assert value == pytest.approx(expected_tight, rel=1e-5)


def test_contrastive_pair_loss_is_tfa_formula():
    y = np.array([1, 0, 0, 1], "float32")
    d = np.array([0.5, 0.5, 1.5, 2.0], "float32")
    expected = [0.25, 0.25, 0.0, 4.0]
    np.testing.assert_allclose(np.asarray(losses.contrastive_pair_loss(y, d)), expected, rtol=1e-6)
    np.testing.assert_allclose(
        np.asarray(losses.contrastive_pair_loss(y, d, margin=2.0)), [0.25, 2.25, 0.25, 4.0], rtol=1e-6
    )


def test_loss_scales_invariantly():
    labels, embeddings = multi_label_batch(3)
    for name in FUNCTIONS:
        a = float(FUNCTIONS[name](labels, embeddings))
        b = float(FUNCTIONS[name](labels, 7.0 * embeddings))
        assert a == pytest.approx(b, rel=1e-5, abs=1e-6)


def clustered_data(n=64, n_classes=4, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    ints = np.arange(n) % n_classes
    centers = rng.normal(size=(n_classes, dim))
    x = (centers[ints] + 0.8 * rng.normal(size=(n, dim))).astype("float32")
    return x, np.eye(n_classes, dtype="float32")[ints]


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_metric_loss_trains_in_model_fit(name):
    keras.utils.set_random_seed(0)
    x, y = clustered_data()
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8)])
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss=loss_from_yaml(name))
    history = model.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
    first, second = history.history["loss"]
    assert np.isfinite(first) and second < first


def test_metric_loss_config_round_trip(tmp_path):
    loss = loss_from_yaml("triplet_hard", margin=0.3, soft=True)
    config = loss.get_config()
    assert config == {"margin": 0.3, "soft": True, "positive": "shared", "jaccard_threshold": 0.5}
    assert loss.name == "triplet_hard"
    labels, embeddings = multi_label_batch(0)
    expected = float(loss(labels, embeddings))
    for clone in (
        losses.TripletHard.from_config(config),
        keras.losses.deserialize(keras.losses.serialize(loss)),
    ):
        assert isinstance(clone, losses.TripletHard)
        assert float(clone(labels, embeddings)) == pytest.approx(expected)

    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4)])
    model.compile(optimizer="sgd", loss=loss)
    model.save(tmp_path / "model.keras")
    restored = keras.models.load_model(tmp_path / "model.keras")
    assert restored.loss.get_config() == config


def test_each_loss_class_computes_its_function_with_its_yaml_settings():
    labels, embeddings = single_label_batch(0)
    for name, fn in FUNCTIONS.items():
        loss = loss_from_yaml(name)
        assert float(loss(labels, embeddings)) == pytest.approx(float(fn(labels, embeddings, **loss.params)))
    loss = loss_from_yaml("multi_similarity", beta=20.0)
    assert float(loss(labels, embeddings)) == pytest.approx(
        ref_multi_similarity(labels, embeddings, beta=20.0), rel=1e-5
    )


def test_a_loss_yaml_states_every_constructor_setting():
    """The YAML is where a loss's defaults live: it sets every parameter of its class's constructor."""
    import inspect
    from pathlib import Path

    from omegaconf import OmegaConf

    for path in sorted((Path(__file__).resolve().parent.parent / "conf" / "loss").glob("*.yaml")):
        cfg = OmegaConf.to_container(OmegaConf.load(path))
        cls = getattr(losses, cfg.pop("_target_").rsplit(".", 1)[1])
        assert set(cfg) == set(inspect.signature(cls.__init__).parameters) - {"self"}, path.name


def test_unknown_parameter_is_a_clear_error():
    with pytest.raises(ValueError, match=r"model.loss: cannot build siamrec.losses.Contrastive.*soft"):
        loss_from_yaml("contrastive", soft=True)


def test_bad_options():
    labels, embeddings = single_label_batch(0)
    with pytest.raises(ValueError, match="distance"):
        losses.triplet_semihard(labels, embeddings, distance="cosine")
    with pytest.raises(ValueError, match="positive"):
        losses.pair_masks(labels, positive="any")
    with pytest.raises(ValueError, match="jaccard_threshold"):
        losses.pair_masks(labels, positive="jaccard", jaccard_threshold=0.0)
