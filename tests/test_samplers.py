"""Batch samplers on the real MLQA-R and XQuAD-R training pairs.

XQuAD-R is the harder case for duplicate-free packing: its questions often share an answer
sentence (57% of its pairs are in a group with a repeated answer text, up to 12 times).
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from functools import partial

import numpy as np
import pandas as pd
import pytest

from hybrid_utils.pairs import build_training_pairs
from hybrid_utils.data import load_lareqa
from hybrid_utils.batch_groups import CROSS_LINGUAL, MONOLINGUAL
from hybrid_utils.samplers import CrossLingualBatchSampler, HybridBatchSampler, MonolingualBatchSampler
from hybrid_utils.callbacks import PairCollator
from hybrid_utils.tutorial import composition_matrix
from hybrid_utils.config import make_batch_sampler

B = 32
SAMPLERS = {
    "monolingual": MonolingualBatchSampler,
    "cross-lingual": CrossLingualBatchSampler,
    "hybrid": partial(HybridBatchSampler, alpha=0.5),
}


class Pairs:
    """Training pairs plus their columns as python lists, for fast checks."""

    def __init__(self, lareqa):
        self.lareqa = lareqa
        self.dataset = build_training_pairs(lareqa)
        arrow = self.dataset.with_format("arrow")
        for column in self.dataset.column_names:
            setattr(self, column, arrow[column].to_pylist())

    def group(self, batch):
        return {(self.question_language[i], self.answer_language[i]) for i in batch}


@pytest.fixture(scope="session")
def mlqa():
    return Pairs(load_lareqa("mlqa-r"))


@pytest.fixture(scope="session")
def xquad():
    return Pairs(load_lareqa("xquad-r"))


@pytest.fixture(params=["mlqa", "xquad"])
def pairs(request):
    return request.getfixturevalue(request.param)


# --------------------------------------------------------------------------- batch contents

@pytest.mark.parametrize("strategy", list(SAMPLERS))
def test_batches_are_full_of_one_language_pair_and_use_each_pair_once(pairs, strategy):
    sampler = SAMPLERS[strategy](pairs.dataset, batch_size=B, drop_last=False, seed=1)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler) > 0
        kinds = Counter()
        for batch in batches:
            assert len(batch) == B                       # always full, even with drop_last=False
            (x, y), = pairs.group(batch)                 # exactly one language (pair) per batch
            kinds[x == y] += 1
        if strategy == "monolingual":
            assert set(kinds) == {True}
        elif strategy == "cross-lingual":
            assert set(kinds) == {False}
        else:
            assert kinds[True] == kinds[False] == len(batches) // 2
        rows = [i for batch in batches for i in batch]   # every pair at most once per epoch
        assert len(rows) == len(set(rows)) == len(sampler) * B
        assert min(rows) >= 0 and max(rows) < len(pairs.dataset)


@pytest.mark.parametrize("batch_size", [B, 128])
def test_no_false_negatives_within_a_batch(xquad, batch_size):
    """No two pairs of a batch share a question id, an answer text or a question text.

    With 128 (9 batches per group) some answer sentences of XQuAD-R are shared by more
    questions than there are batches, so the sampler must also leave surplus pairs out.
    """
    sampler = HybridBatchSampler(xquad.dataset, batch_size=batch_size, alpha=0.5, seed=3)
    for batch in sampler:
        for column in (xquad.question_id, xquad.answer, xquad.question):
            assert len({column[i] for i in batch}) == batch_size


def test_alpha_edges_equal_the_single_strategy_samplers(mlqa):
    for alpha, cls in ((1.0, MonolingualBatchSampler), (0.0, CrossLingualBatchSampler)):
        hybrid = HybridBatchSampler(mlqa.dataset, B, alpha=alpha, seed=5)
        single = cls(mlqa.dataset, B, seed=5)
        for epoch in (0, 2):
            hybrid.set_epoch(epoch)
            single.set_epoch(epoch)
            assert list(hybrid) == list(single)
        assert set(hybrid.describe()["kind"]) == {MONOLINGUAL if alpha == 1 else CROSS_LINGUAL}
    # alpha=1 uses every monolingual batch the data can fill, alpha=0 every cross-lingual one
    mono = MonolingualBatchSampler(mlqa.dataset, B)
    assert len(mono) == sum(n // B for (x, y), n in Counter(zip(mlqa.question_language,
                                                                mlqa.answer_language)).items() if x == y)


# --------------------------------------------------------------------------- proportions

@pytest.mark.parametrize("kind_sampling", ["stratified", "independent"])
@pytest.mark.parametrize("alpha", [0.2, 0.5, 0.8])
def test_monolingual_fraction_is_alpha(mlqa, alpha, kind_sampling):
    fractions = []
    for seed in range(4):
        sampler = HybridBatchSampler(mlqa.dataset, B, alpha=alpha, seed=seed, kind_sampling=kind_sampling)
        for epoch in range(4):
            sampler.set_epoch(epoch)
            frame = sampler.describe()
            fractions.append((frame["kind"] == MONOLINGUAL).mean())
            assert frame.attrs["monolingual_fraction"] == pytest.approx(fractions[-1])
    realised = float(np.mean(fractions))
    assert abs(realised - alpha) < 0.05, realised
    if kind_sampling == "stratified":   # every epoch realises alpha up to rounding
        assert max(abs(f - alpha) for f in fractions) <= 1 / len(sampler)


@pytest.mark.parametrize("data, alpha", [("mlqa", 0.2), ("mlqa", 0.5), ("xquad", 0.5)])
def test_language_pairs_are_drawn_in_proportion_to_their_size(request, data, alpha):
    """Total variation distance between observed and size-proportional group frequencies.

    Threshold = bias + noise. *bias*: a group can only be drawn as often as it fills full
    batches (pairs // B), so the best achievable distribution is P(kind) * batches_g /
    batches_of_kind; its TV distance to the pair-proportional target is computed exactly.
    *noise*: for N independent draws from that distribution, E[TV] <= 1/2 sum_g
    sqrt(q_g (1 - q_g) / N) (Jensen); the sampler draws without replacement (the scarcer
    kind is used up completely every epoch), which only lowers the variance.
    Measured with B=32, 20 epochs: MLQA-R 0.03-0.04 (bias 0.016-0.021, bound 0.06-0.07),
    XQuAD-R 0.02-0.03 (bias 0, bound 0.04-0.05).
    """
    pairs = request.getfixturevalue(data)
    counts, n = Counter(), 0
    for seed in (0,):
        sampler = HybridBatchSampler(pairs.dataset, B, alpha=alpha, seed=seed)
        for epoch in range(20):
            sampler.set_epoch(epoch)
            frame = sampler.describe()
            counts.update(zip(frame["question_language"], frame["answer_language"]))
            n += len(frame)
    target = sampler.target_proportions()
    assert target["target"].sum() == pytest.approx(1.0)
    assert target.loc[target.kind == MONOLINGUAL, "target"].sum() == pytest.approx(alpha)
    observed = np.array([counts[(x, y)] / n for x, y in zip(target.question_language, target.answer_language)])
    p_kind = target["kind"].map({MONOLINGUAL: alpha, CROSS_LINGUAL: 1 - alpha})
    q = (p_kind * target["batches_per_epoch"]
         / target.groupby("kind")["batches_per_epoch"].transform("sum")).to_numpy()
    bias = 0.5 * np.abs(q - target["target"].to_numpy()).sum()
    noise = 0.5 * np.sqrt(q * (1 - q) / n).sum()
    tv = 0.5 * np.abs(observed - target["target"].to_numpy()).sum()
    assert tv < bias + noise, (tv, bias, noise)
    assert tv < 0.05


# --------------------------------------------------------------------------- determinism

def test_same_seed_and_epoch_give_the_same_batches(mlqa):
    a = HybridBatchSampler(mlqa.dataset, B, alpha=0.5, seed=7)
    b = HybridBatchSampler(mlqa.dataset, B, alpha=0.5, seed=7)
    a.set_epoch(3)
    b.set_epoch(3)
    assert list(a) == list(b) == a.batches(3)
    assert list(a) == list(a)                         # iterating twice does not advance anything
    a.set_epoch(4)
    assert list(a) != list(b)                         # another epoch, another order and packing
    assert sorted(map(sorted, a.batches(4))) != sorted(map(sorted, b.batches(3)))
    c = HybridBatchSampler(mlqa.dataset, B, alpha=0.5, seed=8)
    c.set_epoch(3)
    assert list(c) != list(b)
    # (seed, epoch) is hashed as a pair: seed 7 epoch 4 is not seed 8 epoch 3
    assert a.batches(4) != c.batches(3)


# --------------------------------------------------------------------------- reporting

def test_describe_and_composition_matrix(mlqa):
    sampler = HybridBatchSampler(mlqa.dataset, B, alpha=0.5, seed=0)
    sampler.set_epoch(1)
    frame = sampler.describe()
    assert list(frame.columns) == ["index", "kind", "question_language", "answer_language", "size"]
    assert len(frame) == len(sampler) and (frame["size"] == B).all()
    assert set(frame["kind"]) == {MONOLINGUAL, CROSS_LINGUAL}
    batches = list(sampler)
    for row, batch in zip(frame.itertuples(), batches):
        assert mlqa.group(batch) == {(row.question_language, row.answer_language)}
        assert (row.kind == MONOLINGUAL) == (row.question_language == row.answer_language)
    attrs = frame.attrs
    assert attrs["epoch"] == 1 and attrs["pairs_used"] == len(sampler) * B
    assert 0 < attrs["dropped_fraction"] < 0.1 and attrs["dropped_fraction"] <= attrs["unused_fraction"] < 1

    matrix = composition_matrix(sampler)
    languages = sorted(set(mlqa.question_language))
    assert list(matrix.index) == list(matrix.columns) == languages
    assert int(matrix.to_numpy().sum()) == len(sampler) * B
    assert int(np.trace(matrix.to_numpy())) == (frame["kind"] == MONOLINGUAL).sum() * B
    pd.testing.assert_frame_equal(matrix, composition_matrix(batches, dataset=mlqa.dataset))
    pd.testing.assert_frame_equal(matrix, composition_matrix(frame))
    assert np.trace(composition_matrix(MonolingualBatchSampler(mlqa.dataset, B)).to_numpy()) > 0
    assert np.trace(composition_matrix(CrossLingualBatchSampler(mlqa.dataset, B)).to_numpy()) == 0


def test_groups_too_small_for_a_batch_are_reported(mlqa):
    """MLQA-R's smallest language pairs have 161 pairs: with 200 per batch they never appear."""
    with pytest.warns(UserWarning, match="cannot fill a batch of 200"):
        sampler = CrossLingualBatchSampler(mlqa.dataset, 200, seed=0)
    frame = sampler.describe()
    target = sampler.target_proportions()
    unused = target.loc[target.pairs < 200, ["question_language", "answer_language"]]
    assert len(unused) > 0
    seen = set(zip(frame.question_language, frame.answer_language))
    assert not seen & set(map(tuple, unused.to_numpy()))
    assert frame.attrs["dropped_fraction"] > 0.1


# --------------------------------------------------------------------------- errors

@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan"), "half"])
def test_alpha_outside_unit_interval(mlqa, alpha):
    with pytest.raises(ValueError, match=r"alpha must .*\[0, 1\]"):
        HybridBatchSampler(mlqa.dataset, B, alpha=alpha)


def test_invalid_settings_raise_helpful_errors(mlqa):
    with pytest.raises(ValueError, match="needs alpha"):
        HybridBatchSampler(mlqa.dataset, B)
    with pytest.raises(ValueError, match="fixed to 1.*HybridBatchSampler"):
        MonolingualBatchSampler(mlqa.dataset, B, alpha=0.5)
    for size in (0, -4, 2.5):
        with pytest.raises(ValueError, match="batch_size must be a positive integer"):
            HybridBatchSampler(mlqa.dataset, size, alpha=0.5)
    # no language can fill the batch: name the largest group and the largest usable batch size
    with pytest.raises(ValueError, match=r"batch_size=2000 is too large.*en-en.*1148 pairs.*at most 1148"):
        MonolingualBatchSampler(mlqa.dataset, 2000)
    with pytest.raises(ValueError, match=r"no cross-lingual group.*largest"), \
            pytest.warns(UserWarning, match="6 monolingual group"):    # only en-en fills 600
        HybridBatchSampler(mlqa.dataset, 600, alpha=0.5)
    with pytest.raises(ValueError, match="kind_sampling"):
        HybridBatchSampler(mlqa.dataset, B, alpha=0.5, kind_sampling="random")
    with pytest.raises(ValueError, match="unknown batch strategy"):
        make_batch_sampler("multilingual")
    with pytest.raises(ValueError, match="needs alpha"):
        make_batch_sampler("hybrid")
    with pytest.raises(ValueError, match=r"alpha must"):
        make_batch_sampler("hybrid", alpha=2)


def test_missing_kind_of_pairs(mlqa):
    cross_only = mlqa.dataset.select([i for i, (x, y) in enumerate(zip(mlqa.question_language,
                                                                       mlqa.answer_language)) if x != y])
    with pytest.raises(ValueError, match=r"alpha=0.5 needs monolingual pairs.*Use alpha=0"):
        HybridBatchSampler(cross_only, B, alpha=0.5)
    with pytest.raises(ValueError, match=r"needs monolingual pairs"):
        MonolingualBatchSampler(cross_only, B)
    assert len(CrossLingualBatchSampler(cross_only, B)) > 0        # alpha=0 does not need them
    mono_only = mlqa.dataset.select([i for i, (x, y) in enumerate(zip(mlqa.question_language,
                                                                      mlqa.answer_language)) if x == y])
    with pytest.raises(ValueError, match=r"needs cross-lingual pairs.*Use alpha=1"):
        HybridBatchSampler(mono_only, B, alpha=0.9)


def test_missing_columns_and_empty_data(mlqa):
    text_only = mlqa.dataset.select_columns(["question", "answer"])
    with pytest.raises(ValueError, match=r"needs the columns .*question_language.*build_training_pairs"):
        HybridBatchSampler(text_only, B, alpha=0.5)
    with pytest.raises(ValueError, match="is empty"):
        HybridBatchSampler(mlqa.dataset.select([]), B, alpha=0.5)
    with pytest.raises(ValueError, match="row-aligned"):
        HybridBatchSampler(text_only.select(range(100)), B, alpha=0.5, metadata=mlqa.dataset)
    # with the columns given as metadata, the text-only dataset works and gives the same batches
    via_metadata = HybridBatchSampler(text_only, B, alpha=0.5, metadata=mlqa.dataset, seed=2)
    assert list(via_metadata) == list(HybridBatchSampler(mlqa.dataset, B, alpha=0.5, seed=2))
    # plain dicts and DataFrames work as well
    frame = mlqa.dataset.select(range(3000)).to_pandas()
    assert list(HybridBatchSampler(frame, 8, alpha=0.5, seed=1)) == list(
        HybridBatchSampler(frame.to_dict(orient="list"), 8, alpha=0.5, seed=1))


# --------------------------------------------------------------------------- trainer

@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, mlqa):
    """A randomly initialised 1-layer BERT (32 dims) with a WordPiece vocabulary of MLQA-R texts."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer.train_from_iterator(mlqa.question[:2000] + mlqa.answer[:2000],
                                  trainers.WordPieceTrainer(vocab_size=2000, special_tokens=special))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    folder = tmp_path_factory.mktemp("tiny-bert")
    config = BertConfig(vocab_size=len(fast), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(folder)
    fast.save_pretrained(folder)
    transformer = Transformer(str(folder), max_seq_length=64)
    return SentenceTransformer(modules=[transformer, Pooling(transformer.get_embedding_dimension(), "mean")],
                               device="cpu")


def _trainer(model, train_dataset, batch_sampler, tmp_path, collator=True, **kwargs):
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=16, seed=11, batch_sampler=batch_sampler,
        report_to="none", use_cpu=True, save_strategy="no", logging_strategy="no", **kwargs)
    return SentenceTransformerTrainer(
        model=model, args=args, train_dataset=train_dataset, loss=MultipleNegativesRankingLoss(model),
        data_collator=PairCollator.for_model(model, args) if collator else None)


def test_trainer_dataloader_yields_the_sampler_batches(tiny_model, mlqa, tmp_path):
    """How to hook the samplers into SentenceTransformerTrainer (sentence-transformers 6.x)."""
    trainer = _trainer(tiny_model, mlqa.dataset, partial(HybridBatchSampler, alpha=0.5), tmp_path)
    loader = trainer.get_train_dataloader()
    sampler = loader.batch_sampler
    sampler = getattr(sampler, "batch_sampler", sampler)          # accelerate may wrap it
    assert isinstance(sampler, HybridBatchSampler)
    assert sampler.batch_size == 16 and sampler.seed == 11 and sampler.alpha == 0.5
    assert len(loader) == len(sampler)

    for epoch in (0, 1):
        loader.set_epoch(epoch)                                     # what the trainer does per epoch
        assert sampler.epoch == epoch
        expected = sampler.batches(epoch)[:3]
        for batch, rows in zip(loader, expected):
            assert len(mlqa.group(rows)) == 1                       # homogeneous language (pair)
            # only question/answer are tokenized (no question_id / language columns as texts)
            assert {k.rsplit("_", 2)[0] for k in batch} <= {"question", "answer"}
            reference = trainer.data_collator([mlqa.dataset[i] for i in rows])
            assert batch["question_input_ids"].equal(reference["question_input_ids"])
            assert batch["answer_input_ids"].equal(reference["answer_input_ids"])
            assert batch["question_input_ids"].shape[0] == 16


def test_trainer_trains_with_metadata_and_text_only_dataset(tiny_model, mlqa, tmp_path):
    """The alternative hook: text-only train_dataset, languages passed to the sampler as metadata."""
    text_only = mlqa.dataset.select_columns(["question", "answer"])
    trainer = _trainer(tiny_model, text_only, make_batch_sampler("hybrid", alpha=0.5, metadata=mlqa.dataset),
                       tmp_path, collator=False, max_steps=2)
    loader = trainer.get_train_dataloader()
    first = next(iter(loader))
    assert set(first) >= {"question_input_ids", "answer_input_ids"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = trainer.train()
    assert result.global_step == 2 and math.isfinite(result.training_loss)
