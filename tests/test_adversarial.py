"""The adversarial baseline: gradient reversal, discriminator, lambda schedule, and its hook into the trainer."""

import math
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from hybrid_utils.adversarial import (
    AdversarialCallback, GradientReversal, LanguageDiscriminator, ganin_lambda, grad_reverse, lambda_schedule,
    language_label_column,
)
from hybrid_utils.losses import AdversarialLoss


# --------------------------------------------------------------------------- gradient reversal

@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0, 2.5])
def test_grl_is_identity_forward_and_flips_and_scales_the_gradient(lam):
    torch.manual_seed(0)
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 4, dtype=torch.float64)
    grl = GradientReversal(lam)
    y = grl(x)
    assert torch.equal(y, x)
    (y * w).sum().backward()
    assert torch.allclose(x.grad, -lam * w)

    # same through a nonlinear function, against the plain autograd gradient
    x2 = x.detach().clone().requires_grad_(True)
    (torch.tanh(grad_reverse(x2, lam)) ** 2).sum().backward()
    x3 = x.detach().clone().requires_grad_(True)
    (torch.tanh(x3) ** 2).sum().backward()
    assert torch.allclose(x2.grad, -lam * x3.grad)


def test_grl_lambda_is_mutable_between_steps():
    grl = GradientReversal(1.0)
    x = torch.ones(3, requires_grad=True)
    grl(x).sum().backward()
    assert torch.allclose(x.grad, -torch.ones(3))
    grl.lambda_ = 0.25
    x.grad = None
    grl(x).sum().backward()
    assert torch.allclose(x.grad, torch.full((3,), -0.25))
    assert "lambda_=0.25" in repr(grl)


def test_grl_passes_gradcheck():
    x = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    # gradcheck compares with numerical derivatives of the *forward* (identity), so check
    # the reversed gradient against the analytic expectation instead
    g = torch.autograd.grad(grad_reverse(x, 0.7).sum(), x)[0]
    assert torch.allclose(g, torch.full_like(x, -0.7))


# --------------------------------------------------------------------------- schedule

def test_ganin_schedule_values():
    assert ganin_lambda(0.0, 1.0) == 0.0
    assert ganin_lambda(0.5, 1.0) == pytest.approx(2 / (1 + math.exp(-5)) - 1)  # 0.98661
    assert ganin_lambda(0.5, 1.0) == pytest.approx(0.986614, abs=1e-6)
    assert ganin_lambda(1.0, 1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)  # 0.99991
    assert ganin_lambda(1.0, 0.1) == pytest.approx(0.099991, abs=1e-6)
    assert ganin_lambda(2.0, 1.0) == ganin_lambda(1.0, 1.0)  # clamped
    values = [ganin_lambda(p / 10) for p in range(11)]
    assert values == sorted(values)
    assert lambda_schedule(0.5, 0.2, "constant") == 0.2
    assert lambda_schedule(0.5, 0.2, "linear") == pytest.approx(0.1)
    with pytest.raises(ValueError):
        lambda_schedule(0.5, 1.0, "cosine")


# --------------------------------------------------------------------------- discriminator

def test_discriminator_learns_a_separable_toy_problem():
    torch.manual_seed(0)
    n_lang, dim = 4, 16
    centers = torch.randn(n_lang, dim) * 3
    labels = torch.randint(0, n_lang, (512,))
    x = centers[labels] + torch.randn(512, dim)
    disc = LanguageDiscriminator(dim, n_lang, hidden_dim=32, dropout=0.0)
    opt = torch.optim.Adam(disc.parameters(), lr=1e-2)

    def accuracy():
        with torch.no_grad():
            return (disc(x).argmax(-1) == labels).float().mean().item()

    before = accuracy()
    for _ in range(100):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(disc(x), labels).backward()
        opt.step()
    after = accuracy()
    assert after > 0.95 > before


def test_language_label_column():
    assert language_label_column(["de", "en"], ["en", "en"], ["de", "en"]) == [[0, 1], [1, 1]]
    with pytest.raises(ValueError):
        language_label_column(["fr"], ["en"], ["de", "en"])


class _ToyEncoder(torch.nn.Module):
    """Stands in for a SentenceTransformer: features {"x": tensor} -> {"sentence_embedding"}."""

    def __init__(self, dim=8):
        super().__init__()
        self.lin = torch.nn.Linear(dim, dim)

    def forward(self, features):
        return {"sentence_embedding": torch.nn.functional.normalize(self.lin(features["x"]), dim=-1)}

    def get_embedding_dimension(self):
        return 8


def test_adversarial_loss_reverses_the_gradient_reaching_the_encoder():
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    torch.manual_seed(0)
    enc = _ToyEncoder()
    loss = AdversarialLoss(enc, MultipleNegativesRankingLoss(enc), languages=["a", "b"], lambda_max=1.0,
                           schedule="constant", dropout=0.0, queue_size=0)
    feats = [{"x": torch.randn(6, 8)}, {"x": torch.randn(6, 8)}]
    labels = torch.tensor([[0, 1]] * 6)
    out = loss(feats, labels)
    assert set(out) == {"contrastive", "adversarial"}  # an empty queue adds no term

    # gradient of the adversarial part alone: the discriminator descends it, the encoder ascends it
    enc.zero_grad(), loss.discriminator.zero_grad()
    out["adversarial"].backward()
    g_enc = enc.lin.weight.grad.clone()
    g_disc = loss.discriminator.net[0].weight.grad.clone()

    loss.grl.lambda_ = -1.0  # no reversal: plain gradient of the classification loss
    enc.zero_grad(), loss.discriminator.zero_grad()
    loss(feats, labels)["adversarial"].backward()
    assert torch.allclose(enc.lin.weight.grad, -g_enc, atol=1e-6)
    assert torch.allclose(loss.discriminator.net[0].weight.grad, g_disc, atol=1e-6)

    stats = loss.pop_stats()
    assert stats["discriminator_chance"] == 0.5
    assert 0.0 <= stats["discriminator_accuracy"] <= 1.0
    assert loss.pop_stats().get("discriminator_accuracy") is None  # counters were reset


def test_queue_gives_a_monolingual_batch_other_languages_without_gradient_to_the_encoder():
    """With one language per batch, the discriminator still classifies several languages per step."""
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    torch.manual_seed(0)
    enc = _ToyEncoder()
    loss = AdversarialLoss(enc, MultipleNegativesRankingLoss(enc), languages=["a", "b", "c"], lambda_max=1.0,
                           schedule="constant", dropout=0.0, queue_size=8)
    assert len(loss.queued()[1]) == 0
    for lang in (1, 2):  # two monolingual batches of 3 pairs = 6 embeddings each
        loss([{"x": torch.randn(3, 8)}, {"x": torch.randn(3, 8)}], torch.full((3, 2), lang))
    features, labels = loss.queued()
    assert sorted(labels.tolist()) == [1, 1, 2, 2, 2, 2, 2, 2]  # ring buffer of 8: the oldest four were overwritten
    assert not features.requires_grad

    # the third batch (language 0): the queue trains the discriminator in a term of its own; the encoder's
    # adversarial gradient is exactly the one without a queue (a mean over the batch, not diluted by the queue)
    feats = [{"x": torch.randn(3, 8)}, {"x": torch.randn(3, 8)}]
    enc.zero_grad(), loss.discriminator.zero_grad()
    out = loss(feats, torch.zeros(3, 2, dtype=torch.long))
    assert set(out) == {"contrastive", "adversarial", "discriminator_queue"}
    (out["adversarial"] + out["discriminator_queue"]).backward()
    with_queue = enc.lin.weight.grad.clone()
    assert torch.count_nonzero(with_queue) > 0
    assert sorted(loss.queued()[1].tolist()) == [0] * 6 + [2, 2]

    without = AdversarialLoss(enc, MultipleNegativesRankingLoss(enc), languages=["a", "b", "c"], lambda_max=1.0,
                              schedule="constant", dropout=0.0, queue_size=0)
    without.discriminator.load_state_dict(loss.discriminator.state_dict())
    enc.zero_grad()
    without(feats, torch.zeros(3, 2, dtype=torch.long))["adversarial"].backward()
    assert torch.allclose(with_queue, enc.lin.weight.grad, atol=1e-7)
    enc.zero_grad()
    out = loss(feats, torch.zeros(3, 2, dtype=torch.long))
    out["discriminator_queue"].backward()  # the queue term alone: gradient for the discriminator, none for the encoder
    assert enc.lin.weight.grad is None or torch.count_nonzero(enc.lin.weight.grad) == 0
    assert torch.count_nonzero(loss.discriminator.net[0].weight.grad) > 0


def test_confusion_adversary_pushes_the_encoder_towards_a_uniform_prediction_only():
    """The confusion term moves the encoder, never the discriminator; the discriminator learns on detached inputs."""
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    torch.manual_seed(0)
    enc = _ToyEncoder()
    loss = AdversarialLoss(enc, MultipleNegativesRankingLoss(enc), languages=["a", "b"], lambda_max=0.5,
                           schedule="constant", dropout=0.0, queue_size=0, adversary="confusion")
    feats = [{"x": torch.randn(6, 8)}, {"x": torch.randn(6, 8)}]
    out = loss(feats, torch.tensor([[0, 1]] * 6))
    assert set(out) == {"contrastive", "adversarial", "confusion"}
    enc.zero_grad(), loss.discriminator.zero_grad()
    out["confusion"].backward(retain_graph=True)
    assert torch.count_nonzero(enc.lin.weight.grad) > 0
    assert all(p.grad is None or torch.count_nonzero(p.grad) == 0 for p in loss.discriminator.parameters())
    enc.zero_grad()
    out["adversarial"].backward()
    assert enc.lin.weight.grad is None or torch.count_nonzero(enc.lin.weight.grad) == 0
    assert torch.count_nonzero(loss.discriminator.net[0].weight.grad) > 0
    # the confusion term is lambda x the cross-entropy to the uniform distribution: >= lambda x ln(2)
    assert float(out["confusion"]) >= 0.5 * math.log(2) - 1e-6
    with pytest.raises(ValueError, match="unknown adversary"):
        AdversarialLoss(enc, MultipleNegativesRankingLoss(enc), languages=["a", "b"], adversary="mirror")


def test_warm_start_and_lambda_warmup():
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    torch.manual_seed(0)
    enc = _ToyEncoder()
    loss = AdversarialLoss(enc, MultipleNegativesRankingLoss(enc), languages=["a", "b", "c"], lambda_max=1.0,
                           schedule="linear", lambda_warmup=0.2, queue_size=64)
    centers = torch.randn(3, 8) * 3
    labels = torch.arange(3).repeat_interleave(40)
    embeddings = centers[labels] + 0.3 * torch.randn(120, 8)
    result = loss.warm_start(embeddings, labels, steps=150, lr=1e-2)
    assert result["accuracy_after"] > 0.95 and result["accuracy_before"] < 0.8
    assert len(loss.queued()[1]) == 64
    queued, queued_labels = loss.queued()  # every queued embedding keeps its own language
    assert torch.equal((queued[:, None, :] - centers[None]).norm(dim=-1).argmin(1), queued_labels)
    assert loss.heldout_accuracy(centers[labels] + 0.3 * torch.randn(120, 8), labels) > 0.9
    assert "discriminator_heldout_accuracy" in loss.pop_stats()
    assert loss.set_progress(0.1) == 0.0          # warm-up: the encoder is not pushed yet
    assert loss.set_progress(0.6) == pytest.approx(0.5)  # then the linear ramp over the remaining 80 %
    assert loss.set_progress(1.0) == pytest.approx(1.0)


def test_adversarial_loss_lambda_follows_progress():
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    enc = _ToyEncoder()
    loss = AdversarialLoss(enc, MultipleNegativesRankingLoss(enc), languages=["a", "b", "c"], lambda_max=0.5)
    assert loss.current_lambda == 0.0
    assert loss.set_progress(0.5) == pytest.approx(0.5 * 0.986614, abs=1e-6)
    assert loss.set_progress(1.0) == pytest.approx(0.5 * 0.99991, abs=1e-5)

    class State:
        global_step, max_steps = 5, 10

    AdversarialCallback(loss).on_step_begin(None, State(), None)
    assert loss.progress == 0.5


def test_heldout_accuracy_is_measured_at_every_step_of_both_ends_and_sparsely_between():
    from hybrid_utils.adversarial import HeldoutDiscriminatorCallback

    callback = HeldoutDiscriminatorCallback(None, object(), ["a text"], [0], every=10)
    steps = [step for step in range(1, 241) if callback.due(step, 240)]
    assert steps[:24] == list(range(1, 25)) and steps[-24:] == list(range(217, 241))  # the tenths summaries read
    assert steps[24:-24] == list(range(30, 217, 10))
    every_step = HeldoutDiscriminatorCallback(None, object(), ["a text"], [0], every=1)
    assert all(every_step.due(step, 240) for step in range(1, 241))


# --------------------------------------------------------------------------- in the real trainer

@pytest.fixture(scope="module")
def bundled_model():
    from hybrid_utils.encoder import load_encoder

    return load_encoder("bundled", device="cpu")


@pytest.mark.slow
def test_discriminator_is_trained_by_the_trainer(tmp_path, bundled_model):
    """The discriminator lives in the loss; the ST trainer's optimizer must still update it."""
    from hybrid_utils.config import TrainConfig
    from hybrid_utils.training import build_training_run
    from hybrid_utils.runs import load_train_log

    config = TrainConfig(method="adversarial", train_on="mlqa-r", languages=("de", "en", "es"), limit_pairs=300,
                         batch_size=8, steps=3, save_steps=0, output_dir=str(tmp_path / "adv"),
                         show_progress=False, lambda_max=0.5)
    run = build_training_run(config, model=bundled_model)
    params = {n for n, _ in run.trainer.loss.named_parameters()}
    assert any(n.startswith("discriminator.") for n in params)
    before = {k: v.detach().clone() for k, v in run.loss.discriminator.state_dict().items()}
    run.trainer.train()
    after = run.loss.discriminator.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed, "the optimizer did not update the discriminator"
    groups = run.trainer.optimizer.param_groups
    disc_ids = {id(p) for p in run.loss.discriminator.parameters()}
    assert any(id(p) in disc_ids for g in groups for p in g["params"])
    assert any(g.get("initial_lr") == pytest.approx(config.discriminator_lr) for g in groups
               if any(id(p) in disc_ids for p in g["params"]))

    frame = load_train_log(config.output_dir)
    assert list(frame["step"]) == [1, 2, 3]
    for col in ("contrastive", "adversarial", "discriminator_accuracy", "adversarial_lambda"):
        assert col in frame
    assert all(abs(c - 1 / 3) < 1e-5 for c in frame["discriminator_chance"])
    assert frame["adversarial_lambda"].iloc[0] == 0.0 and frame["adversarial_lambda"].iloc[-1] > 0.0


@pytest.mark.slow
def test_discriminator_learns_language_from_monolingual_batches(tmp_path, bundled_model):
    """Monolingual batches hold one language each; with the queue and warm start the discriminator still
    identifies the language of held-out texts far above chance (before the fix it sat at chance: it learned
    the language prior). Whether the encoder then fools it depends on lambda: results/adversarial_sweep.csv."""
    from hybrid_utils.config import TrainConfig
    from hybrid_utils.runs import load_train_log
    from hybrid_utils.training import train

    config = TrainConfig(method="adversarial", train_on="mlqa-r", languages=("de", "en", "es", "zh"),
                         limit_pairs=3000, batch_size=16, steps=24, save_steps=0, lambda_max=1.0,
                         eval_holdout=0.1, discriminator_heldout_every=10, output_dir=str(tmp_path / "adv"),
                         show_progress=False)
    train(config, log=None, model=bundled_model)
    frame = load_train_log(config.output_dir).set_index("step")
    chance = frame["discriminator_chance"].iloc[0]
    assert chance == pytest.approx(0.25)
    early = frame.loc[1:6, "discriminator_heldout_accuracy"].mean()
    assert early > 0.8  # far above chance (0.25) before lambda ramps up
    measured = frame.index[frame["discriminator_heldout_accuracy"].notna()].tolist()
    assert measured == [1, 2, 10, 20, 23, 24]  # every step of the first and last tenth, every 10th in between
    assert (frame.loc[1:2, "adversarial_lambda"] == 0).all() and frame["adversarial_lambda"].iloc[-1] > 0.9
    assert frame["learning_rate"].max() == pytest.approx(config.learning_rate, rel=0.05)


@pytest.mark.slow
def test_measuring_the_heldout_accuracy_leaves_the_trained_weights_unchanged(tmp_path):
    """The measurement is a forward pass without gradient: a run that logs it at every step and one that never
    does train the same weights (so a sparser log is only a cheaper log)."""
    from safetensors.torch import load_file

    from hybrid_utils.config import TrainConfig
    from hybrid_utils.runs import load_train_log
    from hybrid_utils.training import train

    weights, logs = {}, {}
    for every in (1, 0):
        out = tmp_path / f"every{every}"
        train(TrainConfig(method="adversarial", train_on="mlqa-r", languages=("de", "en", "es"), limit_pairs=300,
                          batch_size=8, steps=3, save_steps=0, lambda_max=0.5, eval_holdout=0.2,
                          discriminator_heldout_every=every, output_dir=str(out), show_progress=False), log=None)
        weights[every], logs[every] = load_file(out / "model.safetensors"), load_train_log(out)
    assert logs[1]["discriminator_heldout_accuracy"].notna().all()  # the measurement ran at every step
    assert "discriminator_heldout_accuracy" not in logs[0]
    assert weights[1].keys() == weights[0].keys()
    assert all(torch.equal(weights[1][name], weights[0][name]) for name in weights[0])
