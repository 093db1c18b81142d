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

**Two adversaries** (:data:`ADVERSARIES`, the ``adversary`` setting of a run). With one language per batch, gradient reversal
can be satisfied by making a batch look like *another* language (a confidently wrong discriminator). The
``"confusion"`` adversary (Tzeng et al., "Simultaneous Deep Transfer Across Domains and Tasks", ICCV 2015) instead
pushes the encoder towards a discriminator output that is uniform over the languages, while the discriminator learns
on detached embeddings. The study chooses between them, with ``lambda``, on held-out training questions
(:func:`hybrid_utils.study.tuning.choose_lambda`; ``results/adversarial_sweep.csv``).

Pieces:

* :class:`GradientReversal` / :func:`grad_reverse` - the GRL;
* :class:`LanguageDiscriminator` - ``dim -> hidden -> #languages`` MLP;
* :func:`ganin_lambda` / :func:`lambda_schedule` - the ``lambda`` ramp-up;
* :class:`~hybrid_utils.losses.AdversarialLoss` (in :mod:`hybrid_utils.losses`, next to the contrastive
  loss it extends) - a Sentence Transformers loss module: in-batch-negatives contrastive loss plus the
  adversarial language loss, computed from the *same* embeddings (one encoder forward per column);
* :class:`AdversarialCallback` - a :class:`transformers.TrainerCallback` that tells the
  loss the training progress (so the schedule follows ``global_step / max_steps``, also
  after resuming) and, under ``torchrun`` / ``accelerate launch``, averages the
  discriminator gradients over the processes (the discriminator lives in the loss, not in
  the DDP-wrapped model, so DDP does not do it).

**Why a queue of embeddings.** The adversarial method trains on *monolingual* batches
(one language per batch). A discriminator that only sees the current batch then never has
to tell two languages apart within a step: it learns the language prior, its loss sits at
``ln(#languages)`` and the reversed gradient it sends the encoder carries no language
signal. So the discriminator also classifies a queue of the last ``queue_size`` embeddings of
earlier batches (detached, mixed languages, in the manner of MoCo's negative queue), in a loss
term of its own that sends no gradient to the encoder. The queue costs no extra encoder pass,
unlike a mixed-language side batch, and the encoder receives the reversed gradient of the
current batch's term alone, averaged over that batch only, so ``lambda`` means what it says:
"make these look less like language X" is exactly the signal a monolingual batch cannot give
by itself. The queued embeddings are up to
``queue_size / (2 * batch_size)`` steps old; with the small learning rates used here they
drift little in that time.

**Warm start and warm-up.** Before the first step :meth:`~hybrid_utils.losses.AdversarialLoss.warm_start` fills
the queue with embeddings of a balanced mixed-language sample of the training texts and
trains the discriminator alone on them (its own learning rate), so it is far above chance
when training starts; during the first ``lambda_warmup`` fraction of the steps ``lambda``
stays 0 (the discriminator keeps learning, the encoder is not yet pushed), then it ramps
up following the schedule. :meth:`~hybrid_utils.losses.AdversarialLoss.heldout_accuracy` measures the
discriminator on embeddings of held-out texts of every language; the training loop logs it
next to the chance level (``discriminator_heldout_accuracy``), the evidence that the adversary
acts: at every step of the first and last tenth of training (:func:`end_steps`) and every
``discriminator_heldout_every`` steps in between.

Language labels come from the training dataset's ``label`` column: one ``[question
language id, answer language id]`` list per row (the Sentence Transformers collator turns
it into a ``(batch, 2)`` tensor and never tokenizes it). :func:`language_label_column`
builds it.

Example::

    from hybrid_utils.adversarial import AdversarialCallback
    from hybrid_utils.losses import AdversarialLoss, ContrastiveLoss

    base = ContrastiveLoss(model, scale=20.0)
    loss = AdversarialLoss(model, base, languages=["ar", "de", "en"], lambda_max=0.1)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=pairs_with_label,
                                         loss=loss, callbacks=[AdversarialCallback(loss)])
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn
from transformers import TrainerCallback

SCHEDULES = ("ganin", "constant", "linear")
#: how the encoder is pushed: through the gradient reversal layer, or towards a uniform prediction (AdversarialLoss)
ADVERSARIES = ("reversal", "confusion")
#: the ``adversary`` of a lambda sweep's ``lambda_max = 0`` rows: no adversarial gradient reaches the encoder there
NO_ADVERSARY = "none"


def with_adversary(sweep):
    """A lambda sweep table with an ``adversary`` in every row (rows written before the sweep had one: reversal)."""
    if "adversary" in sweep and sweep["adversary"].notna().all():
        return sweep
    before = sweep["lambda_max"].map(lambda value: NO_ADVERSARY if value == 0 else "reversal")
    return sweep.assign(adversary=sweep["adversary"].fillna(before) if "adversary" in sweep else before)


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


def lambda_schedule(progress: float, lambda_max: float, schedule: str = "ganin", gamma: float = 10.0,
                    warmup: float = 0.0) -> float:
    """``lambda`` at training progress ``p``: ``"ganin"`` (see :func:`ganin_lambda`),
    ``"constant"`` (``lambda_max``) or ``"linear"`` (``lambda_max * p``).

    With ``warmup`` > 0, ``lambda`` is 0 while ``p < warmup`` and the schedule runs over the
    rest of training (``p' = (p - warmup) / (1 - warmup)``).
    """
    p = min(max(float(progress), 0.0), 1.0)
    if warmup > 0.0:
        if p < warmup:
            return 0.0
        p = (p - warmup) / max(1e-12, 1.0 - warmup)
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
    """The ``label`` column for :class:`~hybrid_utils.losses.AdversarialLoss`: ``[question lang id, answer lang id]`` per row."""
    index = {lang: i for i, lang in enumerate(languages)}
    missing = sorted((set(question_languages) | set(answer_languages)) - set(index))
    if missing:
        raise ValueError(f"languages {missing} occur in the pairs but not in languages={list(languages)}")
    return [[index[x], index[y]] for x, y in zip(question_languages, answer_languages)]


# --------------------------------------------------------------------------- trainer hook

class AdversarialCallback(TrainerCallback):
    """Keeps an :class:`~hybrid_utils.losses.AdversarialLoss` in step with the trainer.

    * ``on_step_begin``: ``loss.set_progress(global_step / max_steps)`` - lambda follows the
      schedule, and continues where it was after ``resume_from_checkpoint``;
    * ``on_pre_optimizer_step``: with several processes (DDP), averages the discriminator's
      gradients over them, so every process keeps the same discriminator.
    """

    def __init__(self, loss: nn.Module) -> None:  # an AdversarialLoss (hybrid_utils.losses)
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


def end_steps(max_steps: int) -> int:
    """Steps in the first and in the last tenth of a run of ``max_steps`` (at least one).

    The windows where a run's held-out discriminator accuracy is read (at the start, and over the end of
    training: :func:`hybrid_utils.study.tuning.discriminator_row`), so it is measured at each of their steps
    (:class:`HeldoutDiscriminatorCallback`).
    """
    return max(1, max_steps // 10)


class HeldoutDiscriminatorCallback(TrainerCallback):
    """Measures the discriminator on held-out texts of every language while the encoder trains.

    The texts (answers of held-out question ids, a few per language) are embedded by the
    current encoder without gradient, and :meth:`~hybrid_utils.losses.AdversarialLoss.heldout_accuracy` records the
    accuracy for the step log (``discriminator_heldout_accuracy``). Far above chance before
    ``lambda`` bites and falling as it grows is what an adversary that acts looks like.

    When: at every step of the first and the last tenth of training (:func:`end_steps`), where the summaries
    read the log (the accuracy at the start, over the last tenth: :func:`hybrid_utils.study.tuning.discriminator_row`),
    and every ``every`` steps in between, where it only draws the curve. Measuring is a forward pass of the held-out
    texts at every step it runs (on 2 CPU cores about a third of an adversarial run at ``every=1``); it never changes
    the trained weights (no gradient, and the encoder is put back in training mode).
    """

    def __init__(self, loss: nn.Module, model, texts: Sequence[str], labels: Sequence[int],
                 prompt_name: str | None = "passage", every: int = 1, batch_size: int = 64) -> None:
        if len(texts) != len(labels) or not len(texts):
            raise ValueError("need one language id per held-out text, and at least one text")
        self.loss, self.model, self.texts = loss, model, list(texts)
        self.labels = torch.as_tensor(list(labels), dtype=torch.long)
        self.prompt_name = prompt_name if prompt_name in (getattr(model, "prompts", None) or {}) else None
        self.every, self.batch_size = max(1, int(every)), batch_size

    def due(self, step: int, max_steps: int) -> bool:
        """Whether step ``step`` (1-based) of ``max_steps`` is measured."""
        ends = end_steps(max_steps)
        return step <= ends or step > max_steps - ends or step % self.every == 0

    def measure(self) -> float:
        was_training = self.model.training
        with torch.no_grad():
            embeddings = self.model.encode(self.texts, prompt_name=self.prompt_name, batch_size=self.batch_size,
                                           convert_to_tensor=True, show_progress_bar=False)
        self.model.train(was_training)
        return self.loss.heldout_accuracy(embeddings, self.labels)

    def on_step_end(self, args, state, control, **kwargs):
        if self.due(state.global_step, state.max_steps):
            self.measure()
