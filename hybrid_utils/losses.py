"""The training losses, one per class in the style of sentence-transformers' ``losses``.

* :class:`ContrastiveLoss`: InfoNCE with in-batch negatives, the loss of every method;
* :class:`AdversarialLoss`: the contrastive loss plus a language discriminator behind a gradient reversal
  layer, the adversarial baseline (its pieces and the reasons for them: :mod:`hybrid_utils.adversarial`).

Both take the ``(question, answer)`` pairs of a batch built by :mod:`hybrid_utils.samplers`; which pairs share
a batch decides what the in-batch negatives teach.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import torch
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
from torch import Tensor, nn

from .adversarial import ADVERSARIES, SCHEDULES, GradientReversal, LanguageDiscriminator, lambda_schedule


class ContrastiveLoss(MultipleNegativesRankingLoss):
    """InfoNCE with in-batch negatives: each question must pick its own answer among the batch's answers.

    For a batch of ``B`` pairs ``(q_i, a_i)`` with L2-normalised embeddings, the scores are
    ``s_ij = scale * cos(q_i, a_j)`` and the loss is the cross-entropy of each question over the batch's
    answers, its own answer being the right class::

        loss = mean_i [ -log( exp(s_ii) / sum_j exp(s_ij) ) ]

    So the other ``B - 1`` answers of the batch are the negatives, and the batch's composition is the
    curriculum: in a monolingual batch (:class:`~hybrid_utils.samplers.MonolingualBatchSampler`) every
    negative is in the question's language, so the model learns to tell answers apart within a language;
    in a cross-lingual batch every answer is in another language, so it learns to match across languages;
    a hybrid batch mixes both over an epoch. ``scale`` is 1 / temperature (the ``cpu`` profile's value is
    in :mod:`hybrid_utils.profiles`; sentence-transformers' own default is 20).

    This is sentence-transformers' ``MultipleNegativesRankingLoss``, unchanged: the class only gives the
    loss of the tutorials its name and place (chapter 3 computes it by hand and checks it against the
    library).

    Inputs:
        ``(question, answer)`` pairs, i.e. the ``question`` and ``answer`` columns of
        :func:`hybrid_utils.pairs.build_training_pairs`; no label. Duplicate answers in a batch would be false
        negatives, which the samplers avoid.

    References:
        van den Oord, Li, Vinyals, "Representation Learning with Contrastive Predictive Coding" (InfoNCE),
        arXiv 1807.03748; Henderson et al., "Efficient Natural Language Response Suggestion for Smart Reply",
        arXiv 1705.00652 (in-batch negatives for retrieval).

    Example::

        from hybrid_utils.encoder import load_encoder
        from hybrid_utils.losses import ContrastiveLoss

        model = load_encoder("bundled")
        loss = ContrastiveLoss(model, scale=50.0)
        # SentenceTransformerTrainer(model=model, train_dataset=pairs, loss=loss, ...)
    """


def _embedding_dimension(model: nn.Module) -> int:
    for name in ("get_embedding_dimension", "get_sentence_embedding_dimension"):
        fn = getattr(model, name, None)
        if callable(fn):
            try:
                dim = fn()
            except Exception:  # noqa: BLE001 - fall through to the next way of asking
                dim = None
            if dim:
                return int(dim)
    raise ValueError("cannot tell the embedding dimension of the model: pass embedding_dim=")


class AdversarialLoss(nn.Module):
    """Contrastive loss + adversarial language loss through a gradient reversal layer.

    For a batch of (question, answer) pairs with language labels ``label = [x_id, y_id]``:

    1. embed questions and answers once (``embed_columns``, as the wrapped loss would);
    2. ``contrastive = base_loss.compute_loss_from_embeddings(embeddings)`` (in-batch negatives);
    3. ``adversarial = CE(discriminator(GRL_lambda([q; a])), [x; y])``, a mean over the batch's ``2B``
       embeddings only, so the encoder's reversed gradient has the strength ``lambda`` says;
    4. ``discriminator_queue = CE(discriminator(queue), queue languages)``: the queue of earlier
       embeddings (detached) trains the discriminator in a term of its own, with no gradient to
       the encoder.

    With ``adversary="confusion"`` (Tzeng et al., "Simultaneous Deep Transfer Across Domains and
    Tasks", ICCV 2015) step 3 trains the discriminator on detached embeddings and the encoder
    instead minimises ``lambda * CE(discriminator(e), uniform)`` (a term ``confusion``): it is pushed
    towards embeddings whose language the discriminator cannot tell, rather than towards the
    *wrong* language, which on monolingual batches (one language per batch) is what plain
    reversal asks.

    The returned dict (``contrastive``, ``adversarial``, ``discriminator_queue`` and, for the
    confusion adversary, ``confusion``) is summed by the trainer and every part is logged. Because ``lambda`` sits in the GRL (as in Ganin & Lempitsky),
    the discriminator always learns from the full classification gradient, while the encoder
    receives ``grad(contrastive) - lambda * grad(adversarial)``: it is pushed to make the
    languages indistinguishable, more strongly as ``lambda`` ramps up from 0 to ``lambda_max``.

    The discriminator is a registered submodule of this loss, so
    :class:`~sentence_transformers.SentenceTransformerTrainer` (which builds the optimizer
    from the *loss* parameters, see its ``get_optimizer_cls_and_kwargs``) trains it with the
    same optimizer and learning rate as the encoder (``discriminator_lr`` in
    :mod:`hybrid_utils.training` gives it its own rate through ``learning_rate_mapping``).

    The rest of the method (the gradient reversal layer, the discriminator, the ``lambda`` schedule, why a
    queue of earlier embeddings, the warm start, the callbacks that keep the loss in step with the trainer)
    is in :mod:`hybrid_utils.adversarial`.

    Args:
        model: the SentenceTransformer being trained.
        base_loss: a loss with ``compute_loss_from_embeddings`` (default: a new
            ``MultipleNegativesRankingLoss(model)``).
        languages: language codes; label ``i`` means ``languages[i]``.
        lambda_max: final strength of the gradient reversal.
        schedule: ``"ganin"`` (default), ``"constant"`` or ``"linear"``.
        total_steps: number of optimizer steps, for the schedule when no
            :class:`AdversarialCallback` reports the progress (then every training forward
            counts as one step).
        gamma: steepness of the Ganin ramp (10 in the paper).
        hidden_dim, dropout: of the discriminator.
        embedding_dim: default: asked from the model.
        queue_size: earlier embeddings kept for the discriminator (0: none).
        lambda_warmup: fraction of training with ``lambda = 0`` before the schedule starts.
        adversary: ``"reversal"`` (gradient reversal, Ganin & Lempitsky) or ``"confusion"``.
    """

    def __init__(self, model: nn.Module, base_loss: nn.Module | None = None,
                 languages: Sequence[str] = (), lambda_max: float = 0.1, schedule: str = "ganin",
                 total_steps: int | None = None, gamma: float = 10.0, hidden_dim: int = 256,
                 dropout: float = 0.1, embedding_dim: int | None = None, queue_size: int = 1024,
                 lambda_warmup: float = 0.0, adversary: str = "reversal") -> None:
        super().__init__()
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown lambda schedule {schedule!r}: choose one of {SCHEDULES}")
        if base_loss is None:
            base_loss = MultipleNegativesRankingLoss(model)
        if not hasattr(base_loss, "compute_loss_from_embeddings"):
            raise TypeError(f"{type(base_loss).__name__} has no compute_loss_from_embeddings(); "
                            "wrap a loss such as MultipleNegativesRankingLoss")
        self.languages = list(languages)
        if len(self.languages) < 2:
            raise ValueError("adversarial training needs at least 2 languages")
        if queue_size < 0:
            raise ValueError("queue_size must be >= 0")
        if adversary not in ADVERSARIES:
            raise ValueError(f"unknown adversary {adversary!r}: choose one of {ADVERSARIES}")
        self.adversary = adversary
        if not 0.0 <= lambda_warmup < 1.0:
            raise ValueError("lambda_warmup is a fraction of training in [0, 1)")
        self.model = model
        self.base_loss = base_loss
        self.lambda_max, self.schedule, self.gamma = float(lambda_max), schedule, float(gamma)
        self.lambda_warmup = float(lambda_warmup)
        self.total_steps = total_steps
        dim = embedding_dim or _embedding_dimension(model)
        self.discriminator = LanguageDiscriminator(dim, len(self.languages), hidden_dim, dropout)
        self.grl = GradientReversal(0.0)
        self.queue_size = int(queue_size)
        # buffers: saved with the loss, moved with .to(device); label -1 marks an empty slot
        self.register_buffer("queue_features", torch.zeros(self.queue_size, dim), persistent=False)
        self.register_buffer("queue_labels", torch.full((self.queue_size,), -1, dtype=torch.long), persistent=False)
        self._queue_pos = 0
        self.progress = 0.0
        self._progress_from_callback = False
        self._forward_steps = 0
        self._stats = {"correct": 0, "total": 0, "loss": 0.0, "batches": 0}
        self._extra_stats: dict[str, float] = {}
        self.update_lambda()

    # -- schedule
    @property
    def chance_level(self) -> float:
        """Accuracy of guessing: ``1 / #languages``."""
        return 1.0 / len(self.languages)

    def set_progress(self, progress: float) -> float:
        """Set training progress ``p`` in [0, 1] (called by :class:`AdversarialCallback`); returns lambda."""
        self._progress_from_callback = True
        self.progress = min(max(float(progress), 0.0), 1.0)
        return self.update_lambda()

    def update_lambda(self) -> float:
        self.grl.lambda_ = lambda_schedule(self.progress, self.lambda_max, self.schedule, self.gamma,
                                           self.lambda_warmup)
        return self.grl.lambda_

    @property
    def current_lambda(self) -> float:
        return self.grl.lambda_

    # -- queue
    def enqueue(self, features: Tensor, labels: Tensor) -> None:
        """Add detached embeddings and their language ids to the ring buffer (oldest overwritten)."""
        if self.queue_size == 0:
            return
        features, labels = features.detach()[-self.queue_size:], labels.detach()[-self.queue_size:]
        n = features.shape[0]
        idx = (torch.arange(n, device=self.queue_labels.device) + self._queue_pos) % self.queue_size
        self.queue_features[idx] = features.to(self.queue_features.dtype).to(self.queue_features.device)
        self.queue_labels[idx] = labels.to(self.queue_labels.device)
        self._queue_pos = (self._queue_pos + n) % self.queue_size

    def queued(self) -> tuple[Tensor, Tensor]:
        """The filled part of the queue: ``(features, labels)``."""
        filled = self.queue_labels >= 0
        return self.queue_features[filled], self.queue_labels[filled]

    # -- warm start and held-out accuracy
    def warm_start(self, embeddings: Tensor, labels: Tensor, steps: int = 200, lr: float = 1e-3,
                   batch_size: int = 256, seed: int = 0) -> dict[str, float]:
        """Fill the queue with ``embeddings`` and pre-train the discriminator alone on them.

        ``embeddings`` should be a balanced mixed-language sample of the training texts, embedded
        by the model before training. The discriminator gets ``steps`` Adam steps at ``lr`` on
        random mini-batches (its own optimizer, dropped afterwards). Returns its accuracy on the
        sample before and after.
        """
        embeddings = embeddings.detach().float().to(self.queue_features.device)
        labels = labels.detach().long().to(self.queue_features.device)
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed)).to(labels.device)
        self.enqueue(embeddings[order], labels[order])
        before = self._accuracy(embeddings, labels)
        optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=lr)
        generator = torch.Generator().manual_seed(seed)
        was_training = self.discriminator.training
        self.discriminator.train()
        for _ in range(int(steps)):
            pick = torch.randint(len(labels), (min(batch_size, len(labels)),), generator=generator).to(labels.device)
            loss = nn.functional.cross_entropy(self.discriminator(embeddings[pick]), labels[pick])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        self.discriminator.train(was_training)
        return {"accuracy_before": before, "accuracy_after": self._accuracy(embeddings, labels)}

    @torch.no_grad()
    def _accuracy(self, embeddings: Tensor, labels: Tensor) -> float:
        was_training = self.discriminator.training
        self.discriminator.eval()
        logits = self.discriminator(embeddings.to(self.queue_features.device).float())
        self.discriminator.train(was_training)
        return float((logits.argmax(-1) == labels.to(logits.device)).float().mean())

    def heldout_accuracy(self, embeddings: Tensor, labels: Tensor) -> float:
        """Discriminator accuracy on embeddings of held-out texts (recorded for the step log)."""
        accuracy = self._accuracy(embeddings, labels)
        self._extra_stats["discriminator_heldout_accuracy"] = round(accuracy, 6)
        return accuracy

    # -- forward
    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None) -> dict[str, Tensor]:
        from sentence_transformers.base.losses.merged_forward import embed_columns

        sentence_features = list(sentence_features)
        embeddings = embed_columns(self.model, sentence_features)
        contrastive = self.base_loss.compute_loss_from_embeddings(embeddings, labels)
        if labels is None:
            raise ValueError("AdversarialLoss needs language labels: a 'label' column with "
                             "[question_language_id, answer_language_id] per row (see language_label_column)")
        labels = labels.to(embeddings[0].device).long()
        if labels.dim() == 1:  # one language for all columns of a row
            labels = labels[:, None].expand(-1, len(embeddings))
        if labels.size(1) < len(embeddings):
            raise ValueError(f"label has {labels.size(1)} language ids per row for {len(embeddings)} text columns")
        features = torch.cat(embeddings, dim=0)
        targets = torch.cat([labels[:, i] for i in range(len(embeddings))], dim=0)

        if self.training and not self._progress_from_callback and self.total_steps:
            self.progress = min(self._forward_steps / max(1, self.total_steps), 1.0)
            self.update_lambda()
            self._forward_steps += 1
        # The encoder's adversarial gradient comes from the current batch alone, as a mean over its embeddings, so
        # lambda means what it says. (Averaging it together with the queue divided it by ~(queue + 2B) / 2B.)
        # the confusion adversary trains the discriminator on detached embeddings and moves the encoder in its own term
        confused = self.adversary == "confusion"
        logits = self.discriminator(features.detach() if confused else self.grl(features))
        adversarial = nn.functional.cross_entropy(logits, targets)
        losses = {"contrastive": contrastive, "adversarial": adversarial}
        if confused:
            losses["confusion"] = self.current_lambda * self._confusion_loss(features)
        queue_features, queue_labels = self.queued()
        if self.training and len(queue_labels):
            # the queue trains the discriminator on the other languages, in a term of its own: no encoder gradient
            losses["discriminator_queue"] = nn.functional.cross_entropy(
                self.discriminator(queue_features.to(logits.dtype)), queue_labels)
        if self.training:
            self.enqueue(features, targets)

        with torch.no_grad():
            self._stats["correct"] += int((logits.argmax(-1) == targets).sum())
            self._stats["total"] += int(targets.numel())
            self._stats["loss"] += float(adversarial.detach())
            self._stats["batches"] += 1
        return losses

    def _confusion_loss(self, features: Tensor) -> Tensor:
        """Cross-entropy between the discriminator's prediction and the uniform distribution over languages.

        The encoder's half of the "confusion" adversary (Tzeng et al., 2015): the encoder is pushed towards
        embeddings the *current* discriminator cannot tell apart, while the discriminator's own parameters get no
        gradient from this term (they are used detached), so it keeps learning to classify on its own term.
        """
        params = {name: p.detach() for name, p in self.discriminator.named_parameters()}
        logits = torch.func.functional_call(self.discriminator, params, (features,))
        return -nn.functional.log_softmax(logits, dim=-1).mean()

    def pop_stats(self) -> dict[str, float]:
        """Discriminator accuracy / loss since the last call, lambda and chance level; resets the counters.

        ``discriminator_accuracy`` is measured on the current batches (with monolingual batches a
        one-language task), ``discriminator_loss`` includes the queue, and
        ``discriminator_heldout_accuracy`` (when :meth:`heldout_accuracy` ran since the last call)
        on held-out texts of every language: the number to compare with ``discriminator_chance``.
        """
        s = self._stats
        out = {"adversarial_lambda": round(self.current_lambda, 6), "discriminator_chance": round(self.chance_level, 6)}
        if s["total"]:
            out["discriminator_accuracy"] = round(s["correct"] / s["total"], 6)
            out["discriminator_loss"] = round(s["loss"] / max(1, s["batches"]), 6)
        out.update(self._extra_stats)
        self._stats = {"correct": 0, "total": 0, "loss": 0.0, "batches": 0}
        self._extra_stats = {}
        return out

    def get_config_dict(self) -> dict[str, Any]:
        return {"languages": self.languages, "lambda_max": self.lambda_max, "schedule": self.schedule,
                "gamma": self.gamma, "lambda_warmup": self.lambda_warmup, "adversary": self.adversary, "queue_size": self.queue_size, "base_loss": type(self.base_loss).__name__,
                "discriminator_hidden_dim": self.discriminator.hidden_dim}

    @property
    def citation(self) -> str:
        return """
@inproceedings{ganin2015unsupervised,
    title={Unsupervised Domain Adaptation by Backpropagation},
    author={Ganin, Yaroslav and Lempitsky, Victor},
    booktitle={ICML},
    year={2015}
}
"""
