"""The Siamese variant: a small ensemble of MLP projections of the features, trained with a metric-learning loss.

One Keras model, applied to the standardised features (the base class's scaler):

1. ``whitening``: a fixed PCA whitening of the standardised training features, ``x → Vᵀx / sqrt(λ + whiten_eps)``.
   Transfer features are strongly correlated (GTZAN's eigenvalues span six orders of magnitude): a few directions
   dominate the inputs and the distances, and gradient descent is slow along the others even where they separate
   the labels best; whitening evens them out (what makes LDA strong on such features). ``whiten_eps`` is in units
   of the average eigenvalue (1 after standardisation): at 1.0 the dominant directions are flattened but no
   direction is amplified, so weak, noisy ones (and, with fewer items than dimensions, those the training items do
   not span at all) are not blown up.
2. ``branches`` independent MLPs (dropout → dense ReLU … → dropout → dense ``dim / branches``), each L2-normalised; their
   outputs are concatenated and L2-normalised again (``embedding``), so the cosine of two songs is the mean of the
   branches' cosines: a seed ensemble inside one model, which mostly removes the run-to-run variance.
3. Training on class-balanced batches (siamrec.samplers) with a loss of siamrec.losses: songs sharing a label (or a
   tag, for multi-label data) are positives.

Model selection: with a validation split, the validation MAP (full ranking, cosine) is measured after every epoch
and the last epoch within one standard error of the best is chosen (see validation_map_callback). With ``refit``
a fresh model (scaler and whitening included) is then trained on train+valid for that many epochs, as LDA uses
train+valid too; without it the chosen epoch's weights are kept. Without a validation split the model trains
``epochs`` epochs on the training items.

``ensemble``: that many such models, each trained on its own (its epoch chosen, then refitted) from its own seed —
the head's seed for the first (so ``ensemble: 1`` is the single model), then seeds derived from (seed, k)
(member_seed) — which also reorders the batches. The song embedding is the members' unit-norm embeddings
concatenated and re-normalised: the cosine of two songs is the mean of the members' cosines. The members are saved
as one Keras model (each a nested model ``member1`` …), so saving, loading and the end-to-end phase see one model.
With a validation split, the history records the validation MAP of the first n members together, for every n
(``valid_map_by_members``, measured before the refit: the evidence for choosing ``ensemble``).

``lda_share``: on single-label data, a linear discriminant projection of the standardised features (LDAHead, its
shrinkage chosen on validation among ``lda_shrinkage``) can join the members: the song's cosine is then
(1 − share) · the members' mean cosine + share · the LDA projection's cosine. The share is chosen among the listed
ones by the validation MAP of the members before their refit joined with an LDA fitted on the training items only
(``valid_map_by_lda_share``); the LDA is then refitted on train+valid (with ``refit``). The LDA finds the few
directions that separate the labels linearly, the MLPs what lies beyond them: together they rank better than
either on GTZAN's and Emotify's validation splits (README, "Ensembles of heads"). Multi-label data and a single
listed share of 0 leave it out; without a validation split the first listed share is used.

``inputs``: what ``train`` chooses the head's input among (Head.input_choices, siamrec.pipeline.input_configs):
each entry a list of backbones appended to the configured song vector as ``features.combine``'s are, ``[]`` the
input as configured. With audio and a validation split, a head is built afresh (from the same seeds) and fitted on
each, and the one with the best validation MAP (``valid_map`` above) is kept (``valid_map_by_input`` in the
history); the run saves that input's encoder, so new songs get it too. Training through the backbone or on its
windows needs one backbone: the input is then the configured one.

``train_on``: the training rows are the songs' vectors (``songs``), every window's (``windows``), or each song's
vector followed by ``subsets`` more, each pooled and normalised as the song's own from a random ``subset_fraction``
of each backbone's windows of the song (``subsets``: more, varied examples of a song's sound at the same scale as
the song vectors it is scored on; siamrec.pipeline.Features.rows).
"""

from __future__ import annotations

import contextlib
import io
from typing import Annotated, Literal

import numpy as np

from siamrec.errors import SiamrecError
from siamrec.models.heads import (KerasHead, Shrinkage, Trainable, epoch_progress, l2_normalise, seed_component)
from siamrec.schema import COMBINE, component, integer, list_of, number

# songs: one pooled vector per song | windows: one row per window | subsets: each song's vector and `subsets` more,
# each pooled from a random `subset_fraction` of its windows
RowsOn = Literal["songs", "windows", "subsets"]

Positive = Annotated[float, number(0, lo_open=True)]
Count = Annotated[int, integer(1)]


def whitening_matrix(z: np.ndarray, eps: float) -> np.ndarray:
    """PCA whitening ``V / sqrt(λ + eps)`` of the (standardised) rows ``z``; columns by decreasing variance."""
    if len(z) < 2:
        return np.eye(z.shape[1], dtype=np.float32)
    eigval, eigvec = np.linalg.eigh(np.cov(z, rowvar=False))
    w = eigvec / np.sqrt(np.clip(eigval, 0.0, None) + eps)
    return w[:, ::-1].astype(np.float32)


def build_projection(whitening: np.ndarray, hidden: list[int], dim: int, dropout: float, branches: int,
                     name="siamese"):
    """Fixed whitening, then ``branches`` MLPs to unit-norm ``dim / branches``-d vectors, concatenated and
    re-normalised into the ``dim``-d embedding."""
    if branches < 1 or dim % branches:
        raise SiamrecError(f"model.dim={dim} must be a multiple of model.branches={branches}")
    part = dim // branches
    import keras

    in_dim = whitening.shape[0]
    inp = keras.Input((in_dim,), name="features")
    white = keras.layers.Dense(whitening.shape[1], use_bias=False, trainable=False, name="whitening")
    z = white(inp)
    white.set_weights([whitening])
    outputs = []
    for b in range(1, branches + 1):
        h = z
        for i, width in enumerate(hidden, start=1):
            h = keras.layers.Dropout(dropout, name=f"b{b}_dropout{i}")(h)
            h = keras.layers.Dense(width, activation="relu", name=f"b{b}_hidden{i}")(h)
        h = keras.layers.Dropout(dropout, name=f"b{b}_dropout_out")(h)
        h = keras.layers.Dense(part, name=f"b{b}_projection")(h)
        outputs.append(keras.layers.UnitNormalization(name=f"b{b}_unit")(h))
    h = outputs[0] if branches == 1 else keras.layers.Concatenate(name="branches")(outputs)
    out = keras.layers.UnitNormalization(name="embedding")(h)
    return keras.Model(inp, out, name=name)


def member_seed(seed: int, k: int) -> int:
    """The seed of an ensemble's k-th member (0-based): the head's own seed for the first, then one derived from
    (seed, k), so that runs with neighbouring seeds share no member."""
    return int(seed) if k == 0 else int(np.random.SeedSequence([int(seed), k]).generate_state(1)[0])


def join_members(members: list, name: str = "siamese"):
    """One Keras model whose output (layer ``embedding``) is the members' unit-norm embeddings concatenated and
    re-normalised: its cosine is the mean of the members' cosines. A single member is returned as it is."""
    if len(members) == 1:
        return members[0]
    import keras

    inp = keras.Input(tuple(members[0].input.shape[1:]), name="features")
    joined = keras.layers.Concatenate(name="members")([m(inp) for m in members])
    return keras.Model(inp, keras.layers.UnitNormalization(name="embedding")(joined), name=name)


def join_lda(model, mean: np.ndarray, scalings: np.ndarray, share: float, name: str = "siamese"):
    """One Keras model: `model`'s unit-norm embedding scaled by √(1 − share) beside the unit-norm LDA projection
    ``(x − mean) · scalings`` scaled by √share, re-normalised (layer ``embedding``): its cosine is (1 − share) · the
    model's cosine + share · the projection's."""
    import keras

    inp = keras.Input(tuple(model.input.shape[1:]), name="features")
    members = keras.layers.Rescaling(float(np.sqrt(1.0 - share)), name="members_share")(model(inp))
    project = keras.layers.Dense(scalings.shape[1], trainable=False, name="lda")
    lda = project(inp)
    project.set_weights([scalings.astype(np.float32), (-mean @ scalings).astype(np.float32)])
    lda = keras.layers.Rescaling(float(np.sqrt(share)), name="lda_share")(keras.layers.UnitNormalization(name="lda_unit")(lda))
    joined = keras.layers.Concatenate(name="joined")([members, lda])
    return keras.Model(inp, keras.layers.UnitNormalization(name="embedding")(joined), name=name)


def joined_cosines(members: np.ndarray, lda: np.ndarray, share: float) -> np.ndarray:
    """The rows `join_lda` embeds, from the members' and the projection's embeddings (for choosing the share)."""
    return np.concatenate([np.sqrt(1.0 - share) * l2_normalise(members), np.sqrt(share) * l2_normalise(lda)], axis=1)


def map_standard_error(emb: np.ndarray, y: np.ndarray, groups: int = 20) -> float:
    """Standard error of the full-ranking MAP of the items (as queries against each other), estimated from the
    MAPs of up to ``groups`` disjoint sets of queries, each still ranked against all items."""
    from siamrec.metrics import retrieval_metrics

    parts = np.array_split(np.arange(len(emb)), min(groups, len(emb)))
    maps = np.array([retrieval_metrics(emb[q], y[q], emb, y, self_index=q, ks=(10,))["map"] for q in parts])
    maps = maps[np.isfinite(maps)]
    return float(maps.std(ddof=1) / np.sqrt(len(maps))) if len(maps) > 1 else 0.0


def validation_map_callback(x_valid: np.ndarray, y_valid: np.ndarray, batch_size: int = 4096):
    """Keras callback: full-ranking MAP of the validation items after each epoch (``logs['val_map']``).

    It chooses the last epoch whose MAP is within one standard error of the best (``chosen_epoch``, 1-based, and
    ``chosen_weights``): on a small validation split the exact best epoch is mostly noise, and a model refitted on
    train+valid (more data) suffers more from stopping too early than from training on along a plateau.
    """
    import keras

    from siamrec.metrics import retrieval_metrics

    class ValidationMAP(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.best, self.best_se = -np.inf, 0.0
            self.chosen_epoch, self.chosen_weights = 0, None

        def on_epoch_end(self, epoch, logs=None):
            emb = embed(self.model, x_valid, batch_size)
            value = retrieval_metrics(emb, y_valid, ks=(10,))["map"]
            if logs is not None:
                logs["val_map"] = value
            if value > self.best:
                self.best, self.best_se = value, map_standard_error(emb, y_valid)
            if value >= self.best - self.best_se:
                self.chosen_epoch, self.chosen_weights = epoch + 1, self.model.get_weights()

    return ValidationMAP()


class SiameseHead(KerasHead):
    kind = "siamese"

    def __init__(self, *, loss: Annotated[dict, component("loss")],
                 whiten_eps: Annotated[float | None, number(0, null=True)],
                 hidden: Annotated[list, list_of(integer(1), what="a list of layer widths (integers >= 1)")],
                 dim: Count, branches: Count, ensemble: Count, dropout: Annotated[float, number(0, 1, hi_open=True)],
                 lr: Positive, epochs: Count, refit: bool, classes_per_batch: Annotated[int, integer(2)],
                 m_per_class: Annotated[int, integer(2)], seed: Annotated[int, integer(0)], train_on: RowsOn,
                 subsets: Count, subset_fraction: Annotated[float, number(0, 1, lo_open=True)],
                 finetune_backbone: bool, trainable: Trainable, backbone_lr: Positive, backbone_epochs: Count,
                 lda_share: Annotated[list, list_of(number(0, 1, hi_open=True), min_len=1,
                                                    what="a list of shares in [0, 1) (e.g. [0, 0.25, 0.5])")],
                 lda_shrinkage: Shrinkage,
                 inputs: Annotated[list, list_of(COMBINE, min_len=1,
                                                 what="a list of features.combine lists (e.g. [[], [{backbone: choi2017}]])")]):
        super().__init__(loss=loss, inputs=inputs, whiten_eps=whiten_eps, hidden=hidden, dim=dim, branches=branches,
                         ensemble=ensemble, lda_share=lda_share, lda_shrinkage=lda_shrinkage, dropout=dropout, lr=lr,
                         epochs=epochs, refit=refit,
                         classes_per_batch=classes_per_batch, m_per_class=m_per_class, seed=seed, train_on=train_on,
                         subsets=subsets, subset_fraction=subset_fraction, finetune_backbone=finetune_backbone,
                         trainable=trainable, backbone_lr=backbone_lr, backbone_epochs=backbone_epochs)
        self.train_on = train_on

    def subsets(self) -> tuple[int, float, int] | None:
        c = self.cfg
        if self.train_on != "subsets":
            return None
        return int(c["subsets"]), float(c["subset_fraction"]), int(c["seed"])

    def input_choices(self) -> list[list]:
        """`inputs`; only the configured one when the head trains through the backbone or on its windows (both
        need one backbone)."""
        if self.cfg["finetune_backbone"] or self.train_on == "windows":
            return [[]]
        return [list(entry) for entry in self.cfg["inputs"]]

    def fit(self, training) -> dict:
        """The projection on the song (or window) rows; with finetune_backbone, then on through the backbone: the
        chosen layer groups and the head trained together on decoded windows (siamrec.models.end_to_end)."""
        from siamrec.models.end_to_end import finetune_end_to_end

        what = "model.finetune_backbone=true"
        member = training.backbone(what, head_on_windows=True) if self.cfg["finetune_backbone"] else None
        history = super().fit(training)
        if member is None:
            return history
        clips, y = training.clips("train", self.train_on)
        print(f"training the backbone and the head end to end on {len(clips)} windows")
        extractor = member.extractor
        return {**history, **finetune_end_to_end(extractor.bundle, extractor.model, self, clips, y, member.parts,
                                                 self.cfg)}

    def fit_rows(self, x_train, y_train, x_valid=None, y_valid=None):
        """Train the ensemble's members one after the other (see the module's doc) and join them."""
        from siamrec.metrics import retrieval_metrics

        c = self.cfg
        epochs, n = int(c["epochs"]), int(c["ensemble"])
        has_valid = x_valid is not None and len(x_valid) > 1 and bool((np.asarray(y_valid).sum(axis=0) >= 2).any())
        members, histories, valid_embs = [], [], []
        for k in range(n):
            seed, name = member_seed(int(c["seed"]), k), "siamese" if n == 1 else f"member{k + 1}"
            who = "siamese" if n == 1 else f"siamese member {k + 1}/{n} (seed {seed})"
            if not has_valid:
                model, history, _ = self._train(x_train, y_train, epochs, seed, name)
                members.append(model)
                histories.append(history)
                continue
            model, history, chosen = self._train(x_train, y_train, epochs, seed, name, (x_valid, y_valid))
            valid_embs.append(embed(model, self.scale(x_valid)))
            history = {**history, "chosen_epoch": chosen, "valid_map": history["val_map"][chosen - 1]}
            note = (f"{who}: epoch {chosen} chosen, validation MAP {history['valid_map']:.4f} "
                    f"(best {max(history['val_map']):.4f})")
            if c["refit"]:
                print(f"{note}; training afresh on train+valid ({len(x_train) + len(x_valid)} items) for {chosen} "
                      "epochs")
                model, refit, _ = self._train(np.concatenate([x_train, x_valid]), np.concatenate([y_train, y_valid]),
                                              chosen, seed, name)
                history["refit_loss"] = refit["loss"]
            else:
                print(note)
            members.append(model)
            histories.append(history)
        self.model = self.embedder = join_members(members)
        if n == 1:
            summary = {}
        else:
            # the first member's curves (drawn as the run's training curves), then every member's choice and the
            # validation MAP of the first n members together
            summary = {"members": [{k: h[k] for k in ("chosen_epoch", "valid_map") if k in h} for h in histories]}
            if valid_embs:
                by_members = {str(m): retrieval_metrics(l2_normalise(np.concatenate(valid_embs[:m], axis=1)), y_valid,
                                                        ks=(10,))["map"] for m in range(1, n + 1)}
                summary |= {"valid_map_by_members": by_members, "valid_map": by_members[str(n)]}
                print(f"siamese ensemble of {n}: validation MAP of the first n members together: "
                      + ", ".join(f"{m}: {v:.4f}" for m, v in by_members.items()))
        valid = (x_valid, y_valid, np.concatenate(valid_embs, axis=1)) if valid_embs else None
        return {**histories[0], **summary, **self._join_lda(x_train, y_train, valid)}

    def _join_lda(self, x_train, y_train, valid) -> dict:
        """Join an LDA projection to the members when its share, chosen on validation, is above 0 (see the module's
        doc); `valid` = (x, y, the members' pre-refit embeddings of x) or None. Returns the history's entries."""
        from siamrec.metrics import retrieval_metrics
        from siamrec.models.heads import LDAHead

        c = self.cfg
        shares = [float(s) for s in c["lda_share"]]
        single = all((np.asarray(y).sum(axis=1) == 1).all() for y in ([y_train] + ([valid[1]] if valid else [])))
        if max(shares) == 0 or not single or len(np.unique(np.asarray(y_train).argmax(axis=1))) < 2:
            return {}
        history, share = {}, shares[0]
        if valid is not None and len(shares) > 1:
            x_valid, y_valid, members = valid
            probe = LDAHead(use_valid=False, shrinkage=c["lda_shrinkage"], train_on="songs")
            with contextlib.redirect_stdout(io.StringIO()):  # its own choice of shrinkage: said once, below
                probe.fit_rows(self.scale(x_train), y_train, self.scale(x_valid), y_valid)
            lda = probe.transform(self.scale(x_valid))
            scores = {s: retrieval_metrics(joined_cosines(members, lda, s), y_valid, ks=(10,))["map"] for s in shares}
            share = max(shares, key=lambda s: scores[s])  # ties: the first listed
            history["valid_map_by_lda_share"] = {f"{s:g}": v for s, v in scores.items()}
            history["valid_map"] = scores[share]  # the head's, as it ranks songs (the members' alone at share 0)
            print(f"siamese: LDA share {share:g} chosen on validation (MAP "
                  + ", ".join(f"{s:g}: {v:.4f}" for s, v in scores.items()) + ")")
        if share == 0:
            return {**history, "lda_share": 0.0}
        lda = LDAHead(use_valid=bool(c["refit"]), shrinkage=c["lda_shrinkage"], train_on="songs")
        x_valid, y_valid = (valid[0], valid[1]) if valid is not None else (None, None)
        lda_history = lda.fit_rows(self.scale(x_train), y_train,
                                   None if x_valid is None else self.scale(x_valid), y_valid)
        self.model = self.embedder = join_lda(self.model, lda.mean, lda.scalings, share)
        return {**history, "lda_share": share, "lda_shrinkage": lda_history["shrinkage"]}

    def _train(self, x, y, epochs: int, seed: int, name: str, valid=None) -> tuple:
        """Fit scaler, whitening and a fresh model (built and batched from ``seed``) on (x, y) for ``epochs`` epochs.
        With ``valid`` = (x, y), the validation MAP is logged per epoch and the model ends with the weights of the
        chosen epoch (see validation_map_callback). Returns the model, the history and the epoch kept (1-based)."""
        import keras

        from siamrec.losses import build_loss
        from siamrec.samplers import ClassBalancedSampler, as_keras_dataset

        c = self.cfg
        y = np.asarray(y, dtype=np.float32)
        self.standardiser(x)
        z = self.scale(x)
        eps = c["whiten_eps"]
        whitening = np.eye(z.shape[1], dtype=np.float32) if eps is None else whitening_matrix(z, float(eps))
        seed_component(seed)
        model = build_projection(whitening, [int(h) for h in c["hidden"]], int(c["dim"]), float(c["dropout"]),
                                 int(c["branches"]), name=name)
        usable_labels = int(((y != 0).sum(axis=0) >= 2).sum())
        try:
            loss = build_loss(c["loss"])
            sampler = ClassBalancedSampler(y, min(int(c["classes_per_batch"]), max(usable_labels, 2)),
                                           int(c["m_per_class"]), seed=seed)
        except ValueError as exc:
            raise SiamrecError(f"model=siamese: {exc}") from None
        # Training goes through a wrapper sharing the layers: the saved model stays uncompiled, so model.keras loads
        # without siamrec's loss registered and carries no optimizer state.
        trainer = keras.Model(model.input, model.output, name="siamese_trainer")
        trainer.compile(optimizer=keras.optimizers.Adam(float(c["lr"])), loss=loss)
        selector = None if valid is None else validation_map_callback(self.scale(valid[0]), valid[1])
        callbacks = [cb for cb in (selector, epoch_progress(epochs, "siamese")) if cb is not None]
        history = trainer.fit(as_keras_dataset(z, y, sampler), epochs=epochs, callbacks=callbacks, verbose=0)
        history = {k: [float(v) for v in values] for k, values in history.history.items()}
        if selector is None:
            return model, history, epochs
        model.set_weights(selector.chosen_weights)
        return model, history, selector.chosen_epoch


def embed(model, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """The model's embeddings of the (scaled) rows ``x``, in batches."""
    return np.concatenate([np.asarray(model(x[i:i + batch_size], training=False))
                           for i in range(0, len(x), batch_size)])
