"""One experiment of the study: a training run and its evaluations, kept in the profile's folders.

Each is made now unless it is already there, so the chapters reuse the study's runs (``python -m hybrid_utils
reproduce``) and the study reuses the chapters'. The layout:

* a training run: ``<runs_dir>/<model>/<method>-<train_on>-seed<k>`` (:func:`run_dir`), finished when it holds
  ``train_config.json`` and a model (:func:`is_finished_run`); the lambda sweep's runs are in ``lambda-sweep/``
  below the model (:func:`sweep_dir`);
* an evaluation: ``<results_dir>/<model>/<method>/<eval_on>[-seed<k>].json`` (:func:`result_path`,
  read back by :mod:`hybrid_utils.results`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .config import METHODS, ZERO_SHOT
from .plumbing.lru import LRURegistry
from .profiles import Profile, get_profile
from .results import model_slug, result_name


def run_dir(profile: Profile, model: str, method: str, train_on: str, seed: int | None = None,
            lambda_max: float | None = None, adversary: str | None = None) -> Path:
    """``<runs_dir>/<model>/<method>-<train_on>-seed<k>`` (default seed: the profile's first).

    An adversarial run on the sweep's training set with an adversary and ``lambda_max`` (default: the profile's)
    that the lambda sweep trains *is* that sweep run (:func:`sweep_dir`): one folder per run, so the study, the
    default ``reproduce`` and the chapters train it once and share it.
    """
    seed = profile.seeds[0] if seed is None else int(seed)
    lambda_max = profile.lambda_max if lambda_max is None else float(lambda_max)
    adversary = adversary or profile.adversary
    if (method == "adversarial" and train_on == profile.sweep_train_on and lambda_max in profile.lambda_sweep
            and (adversary in profile.sweep_adversaries or lambda_max == 0)):
        return sweep_dir(profile, model, lambda_max, seed, adversary)
    return Path(profile.runs_dir) / model_slug(model) / f"{method}-{train_on}-seed{seed}"


def result_path(profile: Profile, model: str, method: str, eval_on: str, seed: int | None = None) -> Path:
    """``<results_dir>/<model>/<method>/<eval_on>[-seed<k>].json`` (zero-shot has no seed)."""
    if method != ZERO_SHOT and seed is None:
        seed = profile.seeds[0]
    return Path(profile.results_dir) / model_slug(model) / method / result_name(eval_on, None if method == ZERO_SHOT
                                                                                 else seed)


#: the frozen-layer caches of a process, shared by its Evaluators (a chapter makes one per ``ensure_result`` call, and
#: each used to compute the lower layers of the whole pool again); keyed by base model, trained layers and precision,
#: the least recently used dropped first. Each keeps the lower layers' output for every token of every text it has
#: encoded, as long as the process lives.
_PREFIX_CACHES = LRURegistry(size=2)


def is_finished_run(path: Path) -> bool:
    return (path / "train_config.json").exists() and (path / "modules.json").exists()


def saved_without_run(result: Path, run: Path) -> bool:
    """True when ``result`` is a saved evaluation and ``run``, the run it evaluated, is not here.

    A fresh clone (or Colab after fetching the results) has the committed study's evaluations but not its runs.
    A chapter then reads the evaluation as it is: training the run again would take minutes per run, and the
    retrained run, newer than the file, would be evaluated again and overwrite the committed numbers.
    """
    return result.exists() and not (run / "train_config.json").exists()


class Evaluator:
    """Evaluates models of one profile; with the CPU default it reuses the frozen layers' work.

    Every model fine-tuned with ``trainable="cpu-default"`` keeps the base model's embeddings
    and lower layers, so a :class:`~hybrid_utils.plumbing.prefix_cache.FrozenPrefixCache` per base
    model, shared by every Evaluator of the process, computes them once, and each model only runs its top layers.
    """

    def __init__(self, profile: Profile, log=print):
        self.profile, self.log = profile, log
        self._datasets: dict = {}

    def dataset(self, name: str):
        """The evaluation set ``name`` with the profile's languages and question limit (loaded once)."""
        from .data import load_lareqa

        if name not in self._datasets:
            self._datasets[name] = load_lareqa(name, languages=self.profile.eval_languages,
                                               limit_questions=self.profile.limit_questions)
        return self._datasets[name]

    def _cache(self, base_model: str):
        from .encoder import load_encoder
        from .plumbing.prefix_cache import FrozenPrefixCache

        if self.profile.trainable != "cpu-default" or self.profile.int8_eval:
            return None

        def build():
            base = load_encoder(base_model)
            total = base[0].auto_model.config.num_hidden_layers
            return FrozenPrefixCache(base, total - self.profile.num_trainable_layers, precision=self.profile.precision)

        key = (base_model, self.profile.num_trainable_layers, self.profile.precision)
        return _PREFIX_CACHES.get(key, build)

    def _precision(self, base_model: str | None) -> str:
        cache = self._cache(base_model or self.profile.models[0])
        return cache.precision if cache is not None else self.profile.precision

    def encoder(self, model_path: str, base_model: str | None = None, store: bool = True,
                show_progress_bar: bool = True):
        """``(model, encode)``: the model at ``model_path`` and its ``encode(texts, prompt_name, progress)``.

        ``encode`` returns L2-normalised embeddings; the lower layers come from the base model's
        :class:`~hybrid_utils.plumbing.prefix_cache.FrozenPrefixCache` where the profile freezes them (the cache
        falls back to a full encode for a model whose lower layers differ). ``store``: embeddings are also
        read from and written to the embedding store on disk, where chapter 7's maps and search read them.
        """
        from .encoder import encode_texts, load_encoder, resolved_precision
        from .plumbing.embedding_store import stored_encode

        encoder = load_encoder(model_path, quantize_int8=self.profile.int8_eval)
        cache = self._cache(base_model or self.profile.models[0])
        precision = self._precision(base_model)
        if cache is not None:
            def encode(texts, prompt_name, progress=show_progress_bar):
                if not store:
                    return cache.encode(encoder, list(texts), prompt_name, progress)
                return stored_encode(encoder, texts, prompt_name,
                                     lambda missing: cache.encode(encoder, missing, prompt_name, progress),
                                     resolved_precision(precision, encoder.device))
        else:
            def encode(texts, prompt_name, progress=show_progress_bar):
                return encode_texts(encoder, list(texts), prompt_name, show_progress_bar=progress,
                                    precision=precision, store=store)
        return encoder, encode

    def evaluate(self, model_path: str, dataset, model_name: str, base_model: str | None = None,
                 show_progress_bar: bool = True) -> dict:
        """``evaluate_lareqa`` of the model at ``model_path`` (a run folder or model name) on ``dataset``.

        With ``"center"`` among the profile's ``postprocess``, the result also holds the metrics of the
        language-centred embeddings under ``result["postprocess"]["center"]`` (:mod:`hybrid_utils.postprocess`).
        """
        from .evaluation import evaluate_lareqa

        encoder, encode = self.encoder(model_path, base_model, show_progress_bar=show_progress_bar)
        cache, precision = self._cache(base_model or self.profile.models[0]), self._precision(base_model)
        start = time.perf_counter()
        embeddings = (encode(dataset.questions["text"], "query"), encode(dataset.candidates["sentence"], "passage"))
        seconds_encoding = time.perf_counter() - start
        result = evaluate_lareqa(encoder, dataset, model_name=model_name, embeddings=embeddings,
                                 precision=self.profile.precision, show_progress_bar=show_progress_bar)
        result["seconds_encoding"] = round(seconds_encoding, 3)
        result["precision"] = precision
        if cache is not None:
            result["encoding"] = (f"lower {cache.num_frozen_layers} layers computed once per text "
                                  f"(FrozenPrefixCache), top layers by this model")
        if "center" in self.profile.postprocess:
            from .postprocess import centered_evaluation, centering_means

            start = time.perf_counter()
            means = centering_means(lambda texts, side: encode(texts, side, False), dataset,
                                    self.training_set_of(dataset), sample=self.profile.center_sample)
            result["postprocess"] = {"center": centered_evaluation(*embeddings, dataset, means)}
            result["seconds_postprocess"] = round(time.perf_counter() - start, 3)
        return result

    def missing_metrics(self, result: dict) -> list[str]:
        """Metrics this evaluator writes that ``result`` (written by older code) does not have."""
        missing = [key for key in ("recall_at_1", "recall_at_10") if key not in result]
        missing += [f"postprocess {name}" for name in self.profile.postprocess
                    if name not in (result.get("postprocess") or {})]
        return missing

    def training_set_of(self, dataset):
        """The training set of the protocol that evaluates on ``dataset`` (None for a custom data set)."""
        from .config import PROTOCOLS
        from .data import load_lareqa

        train_on = next((t for t, e in PROTOCOLS.items() if e == getattr(dataset, "name", None)), None)
        if train_on is None:
            return None
        key = ("train", train_on)
        if key not in self._datasets:
            self._datasets[key] = load_lareqa(train_on)
        return self._datasets[key]

    def __call__(self, model_path: str, base_model: str, eval_on: str, out: Path, model_name: str,
                 refresh: bool = False) -> dict:
        """Evaluate on the full evaluation set ``eval_on`` and save to ``out``, unless ``out`` is up to date.

        ``refresh``: also evaluate again when ``out`` lacks a metric added since it was written
        (:meth:`missing_metrics`); the model is not retrained.
        """
        from .results import save_result

        trained = Path(model_path) / "train_config.json"
        up_to_date = out.exists() and trained.exists() and out.stat().st_mtime >= trained.stat().st_mtime
        if saved_without_run(out, Path(model_path)) or up_to_date:
            saved = json.loads(out.read_text())
            missing = self.missing_metrics(saved)
            if not (refresh and missing):
                self.log(f"  [skip] {out} exists" + (f" (without {', '.join(missing)})" if missing else ""))
                return saved
            self.log(f"  {out} has no {', '.join(missing)}: evaluating again")
        result = self.evaluate(model_path, self.dataset(eval_on), model_name, base_model)
        save_result(result, out)
        self.log(f"  mAP mono {result['mono_map']:.3f}  cross {result['cross_map']:.3f}  "
                 f"multi {result['multilingual_map']:.3f}  bias {result['language_bias']:.1f}  -> {out}")
        return result


def train_config(profile: Profile, method: str, train_on: str, model: str | None = None, seed: int | None = None,
                 **overrides):
    """The :class:`~hybrid_utils.config.TrainConfig` of one run of the study (``overrides`` win).

    The profile's run (:meth:`~hybrid_utils.config.TrainConfig.from_profile`) in the study's folder
    (:func:`run_dir`), without the pairs of the protocol's evaluation set.
    """
    from .config import PROTOCOLS, TrainConfig

    model = model or profile.models[0]
    seed = profile.seeds[0] if seed is None else int(seed)
    folder = run_dir(profile, model, method, train_on, seed, overrides.get("lambda_max"), overrides.get("adversary"))
    study = dict(model=model, output_dir=str(folder), exclude_overlap_with=PROTOCOLS.get(train_on, "auto"))
    return TrainConfig.from_profile(profile, method, train_on, seed=seed, **{**study, **overrides})


def ensure_run(profile: Profile | str | None, method: str, train_on: str, model: str | None = None, log=print,
               seed: int | None = None, **overrides) -> Path:
    """The folder of a finished training run of the study: trained now unless it is already there.

    Notebooks call this too, so they reuse the runs of ``reproduce`` (and vice versa).
    """
    from .training import train

    profile = profile if isinstance(profile, Profile) else get_profile(profile)
    config = train_config(profile, method, train_on, model, seed=seed, **overrides)
    out_dir = Path(config.output_dir)
    if is_finished_run(out_dir):
        changed = changed_settings(out_dir, config)
        if not changed:
            log(f"  [skip] {out_dir} is a finished run")
            return out_dir
        log(f"  {out_dir} was trained with other settings ({', '.join(changed)}): training it again")
        config.resume = False
    return Path(train(config, log=log))


_RUN_DEFINING = ("method", "train_on", "model", "alpha", "language_weights", "batch_size", "steps", "learning_rate", "scale", "trainable",
                 "num_trainable_layers", "max_seq_length", "limit_pairs", "seed", "lambda_max", "lambda_schedule",
                 "eval_holdout", "lambda_warmup", "discriminator_queue", "discriminator_warm_start",
                 "discriminator_sample", "adversary", "reinit_top_layers")


def changed_settings(run: Path, config) -> list[str]:
    """The settings that define a run and differ between its saved ``train_config.json`` and ``config``."""
    try:
        saved = json.loads((run / "train_config.json").read_text())
    except (OSError, ValueError):
        return ["unreadable train_config.json"]
    saved = saved.get("config", saved)
    wanted = config.to_dict()
    changed = [key for key in _RUN_DEFINING if key in saved and saved[key] != wanted.get(key)]
    # which adversary a run would use matters only where one acts: never for a method without a discriminator, and
    # not at lambda_max = 0, where the discriminator learns but the encoder ignores it (one run for all: sweep_dir)
    spec = METHODS.get(str(saved.get("method")))
    if (spec is not None and not spec.adversarial) or saved.get("lambda_max") == wanted.get("lambda_max") == 0:
        changed = [key for key in changed if key != "adversary"]
    return changed


def ensure_result(profile: Profile | str | None, method: str, eval_on: str, seed: int | None = None,
                  model: str | None = None, evaluator: "Evaluator | None" = None, log=print) -> dict:
    """The evaluation of one model of the study on ``eval_on``: read from its JSON, else trained and evaluated now.

    Uses the same folders, file names and model names as :func:`reproduce`. A saved evaluation whose run is not
    here (a fresh clone: :func:`saved_without_run`) is read without training; one older than its run is evaluated
    again.
    """
    from .config import PROTOCOLS

    profile = profile if isinstance(profile, Profile) else get_profile(profile)
    model = model or profile.models[0]
    evaluator = evaluator or Evaluator(profile, log)
    if method == ZERO_SHOT:
        return evaluator(model, model, eval_on, result_path(profile, model, ZERO_SHOT, eval_on),
                         model_name=model_slug(model))
    train_on = next(t for t, e in PROTOCOLS.items() if e == eval_on)
    seed = profile.seeds[0] if seed is None else seed
    out = result_path(profile, model, method, eval_on, seed)
    folder = run_dir(profile, model, method, train_on, seed)
    if not saved_without_run(out, folder):
        folder = ensure_run(profile, method, train_on, model, log=log, seed=seed)
    return evaluator(str(folder), model, eval_on, out,
                     model_name=f"{model_slug(model)} + {method} ({train_on}, seed {seed})")


def _adversary_prefix(lambda_max: float, adversary: str) -> str:
    """``""`` for gradient reversal (the sweep's first adversary, whose names came first) and at ``lambda_max = 0``,
    where no adversarial gradient reaches the encoder whatever the adversary (the discriminator learns, the encoder
    ignores it): that run is one run, shared by every adversary. ``"<adversary>-"`` otherwise."""
    return "" if adversary == "reversal" or float(lambda_max) == 0 else f"{adversary}-"


def sweep_name(lambda_max: float, adversary: str) -> str:
    """``lambda<v>``, or ``<adversary>-lambda<v>`` for an adversary other than gradient reversal (results folders)."""
    return f"{_adversary_prefix(lambda_max, adversary)}lambda{float(lambda_max):g}"


def sweep_points(profile: Profile, lambdas=None, adversaries=None) -> list[tuple[float, str]]:
    """The sweep's (``lambda_max``, adversary) pairs: every adversary (default: ``profile.sweep_adversaries``) at every
    ``lambda_max > 0`` (default: ``profile.lambda_sweep``), and ``lambda_max = 0`` once, with the profile's adversary."""
    return [(float(value), adversary) for value in (lambdas or profile.lambda_sweep)
            for adversary in ((adversaries or profile.sweep_adversaries) if value > 0 else (profile.adversary,))]


def sweep_dir(profile: Profile, model: str, lambda_max: float, seed: int, adversary: str | None = None) -> Path:
    """The run folder of the lambda sweep at ``lambda_max`` with ``adversary`` (default: the profile's).

    The study's adversarial runs are those of the chosen adversary and value (:func:`run_dir`).
    """
    prefix = _adversary_prefix(lambda_max, adversary or profile.adversary)
    return (Path(profile.runs_dir) / model_slug(model) / "lambda-sweep"
            / f"{prefix}adversarial-{profile.sweep_train_on}-lambda{float(lambda_max):g}-seed{seed}")
