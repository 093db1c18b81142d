"""Adversarial language-invariance baseline: gradient reversal + a language discriminator.

The baseline the hybrid-batch paper compares against makes sentence embeddings
*language-invariant* in the way of domain-adversarial training (Ganin & Lempitsky,
"Unsupervised Domain Adaptation by Backpropagation", ICML 2015): a small classifier, the
*language discriminator*, tries to tell from a pooled sentence embedding which language
the sentence is in, while the encoder is trained to make that impossible. Both happen in
one backward pass thanks to a *gradient reversal layer* (GRL) between encoder and
discriminator: identity in the forward pass, gradient multiplied by ``-lambda`` in the
backward pass. The discriminator therefore descends the language-classification loss while
the encoder *ascends* it (scaled by ``lambda``), on top of the usual contrastive loss.

Pieces:

* :class:`GradientReversal` / :func:`grad_reverse` - the GRL;
* :class:`LanguageDiscriminator` - ``dim -> hidden -> #languages`` MLP;
* :func:`ganin_lambda` / :func:`lambda_schedule` - the ``lambda`` ramp-up;
* :class:`AdversarialLoss` - a Sentence Transformers loss module: in-batch-negatives
  contrastive loss (:class:`~sentence_transformers.sentence_transformer.losses.MultipleNegativesRankingLoss`)
  plus the adversarial language loss, computed from the *same* embeddings (one encoder
  forward per column);
* :class:`AdversarialCallback` - a :class:`transformers.TrainerCallback` that tells the
  loss the training progress (so the schedule follows ``global_step / max_steps``, also
  after resuming) and, under ``torchrun`` / ``accelerate launch``, averages the
  discriminator gradients over the processes (the discriminator lives in the loss, not in
  the DDP-wrapped model, so DDP does not do it).

Language labels come from the training dataset's ``label`` column: one ``[question
language id, answer language id]`` list per row (the Sentence Transformers collator turns
it into a ``(batch, 2)`` tensor and never tokenizes it). :func:`language_label_column`
builds it.

Example::

    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from hybrid_utils.adversarial import AdversarialLoss, AdversarialCallback

    base = MultipleNegativesRankingLoss(model, scale=20.0)
    loss = AdversarialLoss(model, base, languages=["ar", "de", "en"], lambda_max=0.1)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=pairs_with_label,
                                         loss=loss, callbacks=[AdversarialCallback(loss)])
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import torch
from torch import Tensor, nn
from transformers import TrainerCallback

SCHEDULES = ("ganin", "constant", "linear")


# --------------------------------------------------------------------------- gradient reversal

class _GradientReversalFunction(torch.autograd.Function):
    """Identity forward; ``grad * -lambda`` backward."""

    @staticmethod
    def forward(ctx, x: Tensor, lambda_: float) -> Tensor:  # noqa: D401
        ctx.lambda_ = float(lambda_)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        return grad_output.neg() * ctx.lambda_, None


def grad_reverse(x: Tensor, lambda_: float = 1.0) -> Tensor:
    """Functional gradient reversal: returns ``x``; in backward multiplies the gradient by ``-lambda_``."""
    return _GradientReversalFunction.apply(x, lambda_)


class GradientReversal(nn.Module):
    """Gradient reversal layer (Ganin & Lempitsky, 2015).

    Forward: the identity. Backward: the incoming gradient multiplied by ``-lambda_``.
    ``lambda_`` is a plain mutable attribute (not a parameter), so a schedule can change it
    between steps: ``grl.lambda_ = 0.3``.

    Hand-written on purpose: none of the libraries this project uses (PyTorch,
    transformers, sentence-transformers, accelerate) ships a gradient reversal layer, and
    it is ten lines of :class:`torch.autograd.Function`.
    """

    def __init__(self, lambda_: float = 1.0) -> None:
        super().__init__()
        self.lambda_ = float(lambda_)

    def forward(self, x: Tensor) -> Tensor:
        return grad_reverse(x, self.lambda_)

    def extra_repr(self) -> str:
        return f"lambda_={self.lambda_:g}"


# --------------------------------------------------------------------------- discriminator

class LanguageDiscriminator(nn.Module):
    """A small MLP that predicts the language of a pooled sentence embedding.

    ``Linear(dim, hidden) -> ReLU -> Dropout -> Linear(hidden, num_languages)``.
    """

    def __init__(self, embedding_dim: int = 384, num_languages: int = 7, hidden_dim: int = 256,
                 dropout: float = 0.1) -> None:
        super().__init__()
        if num_languages < 2:
            raise ValueError("a language discriminator needs at least 2 languages")
        self.embedding_dim, self.num_languages, self.hidden_dim = embedding_dim, num_languages, hidden_dim
        self.net = nn.Sequential(
            nn.Linear(embedding_dim, hidden_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, num_languages),
        )

    def forward(self, embeddings: Tensor) -> Tensor:
        """Logits of shape ``(n, num_languages)``."""
        return self.net(embeddings)


# --------------------------------------------------------------------------- lambda schedule

def ganin_lambda(progress: float, lambda_max: float = 1.0, gamma: float = 10.0) -> float:
    """Ganin & Lempitsky's ramp: ``lambda_max * (2 / (1 + exp(-gamma * p)) - 1)``, ``p`` in [0, 1].

    0 at ``p = 0``, ``lambda_max * 0.9866`` at ``p = 0.5`` (gamma 10), ``lambda_max * 0.99991`` at ``p = 1``.
    The discriminator is thus nearly unopposed during the first few percent of training,
    when its predictions are still noise.
    """
    p = min(max(float(progress), 0.0), 1.0)
    return float(lambda_max) * (2.0 / (1.0 + math.exp(-gamma * p)) - 1.0)


def lambda_schedule(progress: float, lambda_max: float, schedule: str = "ganin", gamma: float = 10.0) -> float:
    """``lambda`` at training progress ``p``: ``"ganin"`` (see :func:`ganin_lambda`),
    ``"constant"`` (``lambda_max``) or ``"linear"`` (``lambda_max * p``)."""
    p = min(max(float(progress), 0.0), 1.0)
    if schedule == "ganin":
        return ganin_lambda(p, lambda_max, gamma)
    if schedule == "constant":
        return float(lambda_max)
    if schedule == "linear":
        return float(lambda_max) * p
    raise ValueError(f"unknown lambda schedule {schedule!r}: choose one of {SCHEDULES}")


# --------------------------------------------------------------------------- labels

def language_label_column(question_languages: Sequence[str], answer_languages: Sequence[str],
                          languages: Sequence[str]) -> list[list[int]]:
    """The ``label`` column for :class:`AdversarialLoss`: ``[question lang id, answer lang id]`` per row."""
    index = {lang: i for i, lang in enumerate(languages)}
    missing = sorted((set(question_languages) | set(answer_languages)) - set(index))
    if missing:
        raise ValueError(f"languages {missing} occur in the pairs but not in languages={list(languages)}")
    return [[index[x], index[y]] for x, y in zip(question_languages, answer_languages)]


# --------------------------------------------------------------------------- the loss

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
    3. ``adversarial = CE(discriminator(GRL_lambda([q; a])), [x; y])`` over the ``2B`` embeddings.

    The returned dict ``{"contrastive": ..., "adversarial": ...}`` is summed by the trainer
    and both parts are logged. Because ``lambda`` sits in the GRL (as in Ganin & Lempitsky),
    the discriminator always learns from the full classification gradient, while the encoder
    receives ``grad(contrastive) - lambda * grad(adversarial)``: it is pushed to make the
    languages indistinguishable, more strongly as ``lambda`` ramps up from 0 to ``lambda_max``.

    The discriminator is a registered submodule of this loss, so
    :class:`~sentence_transformers.SentenceTransformerTrainer` (which builds the optimizer
    from the *loss* parameters, see its ``get_optimizer_cls_and_kwargs``) trains it with the
    same optimizer and learning rate as the encoder (``discriminator_lr`` in
    :mod:`hybrid_utils.training` gives it its own rate through ``learning_rate_mapping``).

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
    """

    def __init__(self, model: nn.Module, base_loss: nn.Module | None = None,
                 languages: Sequence[str] = (), lambda_max: float = 0.1, schedule: str = "ganin",
                 total_steps: int | None = None, gamma: float = 10.0, hidden_dim: int = 256,
                 dropout: float = 0.1, embedding_dim: int | None = None) -> None:
        super().__init__()
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown lambda schedule {schedule!r}: choose one of {SCHEDULES}")
        if base_loss is None:
            from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
            base_loss = MultipleNegativesRankingLoss(model)
        if not hasattr(base_loss, "compute_loss_from_embeddings"):
            raise TypeError(f"{type(base_loss).__name__} has no compute_loss_from_embeddings(); "
                            "wrap a loss such as MultipleNegativesRankingLoss")
        self.languages = list(languages)
        if len(self.languages) < 2:
            raise ValueError("adversarial training needs at least 2 languages")
        self.model = model
        self.base_loss = base_loss
        self.lambda_max, self.schedule, self.gamma = float(lambda_max), schedule, float(gamma)
        self.total_steps = total_steps
        dim = embedding_dim or _embedding_dimension(model)
        self.discriminator = LanguageDiscriminator(dim, len(self.languages), hidden_dim, dropout)
        self.grl = GradientReversal(0.0)
        self.progress = 0.0
        self._progress_from_callback = False
        self._forward_steps = 0
        self._stats = {"correct": 0, "total": 0, "loss": 0.0, "batches": 0}
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
        self.grl.lambda_ = lambda_schedule(self.progress, self.lambda_max, self.schedule, self.gamma)
        return self.grl.lambda_

    @property
    def current_lambda(self) -> float:
        return self.grl.lambda_

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
        logits = self.discriminator(self.grl(features))
        adversarial = nn.functional.cross_entropy(logits, targets)

        with torch.no_grad():
            self._stats["correct"] += int((logits.argmax(-1) == targets).sum())
            self._stats["total"] += int(targets.numel())
            self._stats["loss"] += float(adversarial.detach())
            self._stats["batches"] += 1
        return {"contrastive": contrastive, "adversarial": adversarial}

    def pop_stats(self) -> dict[str, float]:
        """Discriminator accuracy / loss since the last call, lambda and chance level; resets the counters."""
        s = self._stats
        out = {"adversarial_lambda": round(self.current_lambda, 6), "discriminator_chance": round(self.chance_level, 6)}
        if s["total"]:
            out["discriminator_accuracy"] = round(s["correct"] / s["total"], 6)
            out["discriminator_loss"] = round(s["loss"] / max(1, s["batches"]), 6)
        self._stats = {"correct": 0, "total": 0, "loss": 0.0, "batches": 0}
        return out

    def get_config_dict(self) -> dict[str, Any]:
        return {"languages": self.languages, "lambda_max": self.lambda_max, "schedule": self.schedule,
                "gamma": self.gamma, "base_loss": type(self.base_loss).__name__,
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


# --------------------------------------------------------------------------- trainer hook

class AdversarialCallback(TrainerCallback):
    """Keeps an :class:`AdversarialLoss` in step with the trainer.

    * ``on_step_begin``: ``loss.set_progress(global_step / max_steps)`` - lambda follows the
      schedule, and continues where it was after ``resume_from_checkpoint``;
    * ``on_pre_optimizer_step``: with several processes (DDP), averages the discriminator's
      gradients over them, so every process keeps the same discriminator.
    """

    def __init__(self, loss: AdversarialLoss) -> None:
        self.loss = loss

    def on_train_begin(self, args, state, control, **kwargs):
        self.loss.set_progress(state.global_step / max(1, state.max_steps))

    def on_step_begin(self, args, state, control, **kwargs):
        self.loss.set_progress(state.global_step / max(1, state.max_steps))

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
            return
        world = dist.get_world_size()
        for p in self.loss.discriminator.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(world)
