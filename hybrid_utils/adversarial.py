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

**Why a queue of embeddings.** The adversarial method trains on *monolingual* batches
(one language per batch). A discriminator that only sees the current batch then never has
to tell two languages apart within a step: it learns the language prior, its loss sits at
``ln(#languages)`` and the reversed gradient it sends the encoder carries no language
signal. So the discriminator classifies the current batch's embeddings *together with* a
queue of the last ``queue_size`` embeddings of earlier batches (detached, mixed languages,
in the manner of MoCo's negative queue). The queue costs no extra encoder pass, unlike a
mixed-language side batch, and the encoder still receives the reversed gradient on every
embedding of the current batch: "make these look less like language X" is exactly the
signal a monolingual batch cannot give by itself. The queued embeddings are up to
``queue_size / (2 * batch_size)`` steps old; with the small learning rates used here they
drift little in that time.

**Warm start and warm-up.** Before the first step :meth:`AdversarialLoss.warm_start` fills
the queue with embeddings of a balanced mixed-language sample of the training texts and
trains the discriminator alone on them (its own learning rate), so it is far above chance
when training starts; during the first ``lambda_warmup`` fraction of the steps ``lambda``
stays 0 (the discriminator keeps learning, the encoder is not yet pushed), then it ramps
up following the schedule. :meth:`AdversarialLoss.heldout_accuracy` measures the
discriminator on embeddings of held-out texts of every language; the training loop logs it
per step next to the chance level (``discriminator_heldout_accuracy``), the evidence that
the adversary acts.

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
#: how the encoder is pushed: through the gradient reversal layer, or towards a uniform prediction (AdversarialLoss)
ADVERSARIES = ("reversal", "confusion")


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
            from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
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


class HeldoutDiscriminatorCallback(TrainerCallback):
    """After every ``every`` optimizer steps, measures the discriminator on held-out texts of every language.

    The texts (answers of held-out question ids, a few per language) are embedded by the
    current encoder without gradient, and :meth:`AdversarialLoss.heldout_accuracy` records the
    accuracy for the step log (``discriminator_heldout_accuracy``). Far above chance before
    ``lambda`` bites and falling as it grows is what an adversary that acts looks like.
    """

    def __init__(self, loss: AdversarialLoss, model, texts: Sequence[str], labels: Sequence[int],
                 prompt_name: str | None = "passage", every: int = 1, batch_size: int = 64) -> None:
        if len(texts) != len(labels) or not len(texts):
            raise ValueError("need one language id per held-out text, and at least one text")
        self.loss, self.model, self.texts = loss, model, list(texts)
        self.labels = torch.as_tensor(list(labels), dtype=torch.long)
        self.prompt_name = prompt_name if prompt_name in (getattr(model, "prompts", None) or {}) else None
        self.every, self.batch_size = max(1, int(every)), batch_size

    def measure(self) -> float:
        was_training = self.model.training
        with torch.no_grad():
            embeddings = self.model.encode(self.texts, prompt_name=self.prompt_name, batch_size=self.batch_size,
                                           convert_to_tensor=True, show_progress_bar=False)
        self.model.train(was_training)
        return self.loss.heldout_accuracy(embeddings, self.labels)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0:
            self.measure()
