"""The whole study in one call: train every method on both protocols, evaluate, tabulate, plot.

``python -m hybrid_utils reproduce`` runs, for each model of the profile and each
zero-shot protocol (train on MLQA-R → evaluate on XQuAD-R, and the reverse):

1. the untrained model (``zero-shot``) on the evaluation set,
2. each method (``monolingual``, ``cross-lingual``, ``hybrid``, ``adversarial``,
   ``hybrid-adversarial``): fine-tune on the training set, evaluate on the full
   pools of the evaluation set,

then writes ``summary.csv``, ``summary.md``, the JSON of every evaluation and the
figures (PNG) into the profile's results folder. It is resumable: a finished
training run (its folder holds ``train_config.json`` and a model) or evaluation
(its JSON exists) is skipped, so an interrupted study continues where it stopped.
"""

from __future__ import annotations

import json
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .profiles import PROFILE_ENV, Profile, get_profile

SUMMARY_COLUMNS = ["model", "method", "train_on", "eval_on", "mono_map", "cross_map", "multilingual_map",
                   "language_bias", "mono_map_micro", "cross_map_micro", "multilingual_map_micro", "n_questions"]


def model_slug(model: str) -> str:
    """A folder name for a model name or path (``bundled`` → ``multilingual-e5-small``)."""
    return "multilingual-e5-small" if model == "bundled" else Path(model.rstrip("/")).name


def run_dir(profile: Profile, model: str, method: str, train_on: str) -> Path:
    return Path(profile.runs_dir) / model_slug(model) / f"{method}-{train_on}"


def result_path(profile: Profile, model: str, method: str, eval_on: str) -> Path:
    return Path(profile.results_dir) / model_slug(model) / method / f"{eval_on}.json"


def is_finished_run(path: Path) -> bool:
    return (path / "train_config.json").exists() and (path / "modules.json").exists()


@dataclass
class StageTimer:
    """Wall-clock seconds per stage, printed at the end of a study."""

    def __post_init__(self):
        self.seconds: "OrderedDict[str, float]" = OrderedDict()

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    def table(self) -> str:
        width = max([len(k) for k in self.seconds] + [5])
        lines = [f"{stage:<{width}}  {secs:8.1f} s" for stage, secs in self.seconds.items()]
        lines.append(f"{'total':<{width}}  {sum(self.seconds.values()):8.1f} s")
        return "\n".join(lines)


class Evaluator:
    """Evaluates models of one profile; with the CPU default it reuses the frozen layers' work.

    Every model fine-tuned with ``trainable="cpu-default"`` keeps the base model's embeddings
    and lower layers, so a :class:`~hybrid_utils.prefix_cache.FrozenPrefixCache` per base
    model computes them once, and each model only runs its top layers.
    """

    def __init__(self, profile: Profile, log=print):
        self.profile, self.log = profile, log
        self._datasets: dict = {}
        self._caches: dict = {}

    def dataset(self, name: str):
        """The evaluation set ``name`` with the profile's languages and question limit (loaded once)."""
        from .data import load_lareqa

        if name not in self._datasets:
            self._datasets[name] = load_lareqa(name, languages=self.profile.eval_languages,
                                               limit_questions=self.profile.limit_questions)
        return self._datasets[name]

    def _cache(self, base_model: str):
        from .encoder import load_encoder
        from .prefix_cache import FrozenPrefixCache

        if self.profile.trainable != "cpu-default" or self.profile.int8_eval:
            return None
        if base_model not in self._caches:
            base = load_encoder(base_model)
            total = base[0].auto_model.config.num_hidden_layers
            self._caches[base_model] = FrozenPrefixCache(base, total - self.profile.num_trainable_layers,
                                                         precision=self.profile.precision)
        return self._caches[base_model]

    def evaluate(self, model_path: str, dataset, model_name: str, base_model: str | None = None,
                 show_progress_bar: bool = True) -> dict:
        """``evaluate_lareqa`` of the model at ``model_path`` (a run folder or model name) on ``dataset``."""
        from .encoder import load_encoder
        from .evaluation import evaluate_lareqa

        encoder = load_encoder(model_path, quantize_int8=self.profile.int8_eval)
        cache = self._cache(base_model or self.profile.models[0])
        start = time.perf_counter()
        embeddings = cache.lareqa_embeddings(encoder, dataset, show_progress_bar) if cache is not None else None
        result = evaluate_lareqa(encoder, dataset, model_name=model_name, embeddings=embeddings,
                                 precision=self.profile.precision, show_progress_bar=show_progress_bar)
        if embeddings is not None:
            result["seconds_encoding"] = round(time.perf_counter() - start - result.get("seconds_scoring", 0.0), 3)
            result["precision"] = cache.precision
            result["encoding"] = (f"lower {cache.num_frozen_layers} layers computed once per text "
                                  f"(FrozenPrefixCache), top layers by this model")
        return result

    def __call__(self, model_path: str, base_model: str, eval_on: str, out: Path, model_name: str) -> dict:
        """Evaluate on the full evaluation set ``eval_on`` and save to ``out``, unless ``out`` is up to date."""
        from .evaluation import save_result

        trained = Path(model_path) / "train_config.json"
        if out.exists() and (not trained.exists() or out.stat().st_mtime >= trained.stat().st_mtime):
            self.log(f"  [skip] {out} exists")
            return json.loads(out.read_text())
        result = self.evaluate(model_path, self.dataset(eval_on), model_name, base_model)
        save_result(result, out)
        self.log(f"  mAP mono {result['mono_map']:.3f}  cross {result['cross_map']:.3f}  "
                 f"multi {result['multilingual_map']:.3f}  bias {result['language_bias']:.1f}  -> {out}")
        return result


def train_config(profile: Profile, method: str, train_on: str, model: str | None = None, **overrides):
    """The :class:`~hybrid_utils.training.TrainConfig` of one run of the study (``overrides`` win)."""
    from .training import PROTOCOLS, TrainConfig

    model = model or profile.models[0]
    settings = dict(method=method, train_on=train_on, model=model,
                    output_dir=str(run_dir(profile, model, method, train_on)), alpha=profile.alpha,
                    batch_size=profile.batch_size, steps=profile.steps, learning_rate=profile.learning_rate,
                    trainable=profile.trainable, num_trainable_layers=profile.num_trainable_layers,
                    max_seq_length=profile.max_seq_length, limit_pairs=profile.limit_pairs, scale=profile.scale,
                    exclude_overlap_with=PROTOCOLS.get(train_on, "auto"))
    settings.update(overrides)
    return TrainConfig(**settings)


def ensure_run(profile: Profile | str | None, method: str, train_on: str, model: str | None = None, log=print,
               **overrides) -> Path:
    """The folder of a finished training run of the study: trained now unless it is already there.

    Notebooks call this too, so they reuse the runs of ``reproduce`` (and vice versa).
    """
    from .training import train

    profile = profile if isinstance(profile, Profile) else get_profile(profile)
    config = train_config(profile, method, train_on, model, **overrides)
    out_dir = Path(config.output_dir)
    if is_finished_run(out_dir):
        changed = _changed_settings(out_dir, config)
        if not changed:
            log(f"  [skip] {out_dir} is a finished run")
            return out_dir
        log(f"  {out_dir} was trained with other settings ({', '.join(changed)}): training it again")
        config.resume = False
    return Path(train(config, log=log))


_RUN_DEFINING = ("method", "train_on", "model", "alpha", "batch_size", "steps", "learning_rate", "scale", "trainable",
                 "num_trainable_layers", "max_seq_length", "limit_pairs", "seed", "lambda_max", "lambda_schedule")


def _changed_settings(run: Path, config) -> list[str]:
    """The settings that define a run and differ between its saved ``train_config.json`` and ``config``."""
    try:
        saved = json.loads((run / "train_config.json").read_text())
    except (OSError, ValueError):
        return ["unreadable train_config.json"]
    saved = saved.get("config", saved)
    wanted = config.to_dict()
    return [key for key in _RUN_DEFINING if key in saved and saved[key] != wanted.get(key)]


def reproduce(profile: Profile | str | None = None, methods=None, models=None, log=print) -> pd.DataFrame:
    """Run the study of ``profile`` (resumable) and return the summary table.

    Args:
        profile: a :class:`~hybrid_utils.profiles.Profile` or its name (default: from the environment).
        methods: restrict to these methods (default: the profile's).
        models: restrict to these models (default: the profile's).
        log: where progress lines go.
    """
    from .training import METHODS

    profile = profile if isinstance(profile, Profile) else get_profile(profile)
    methods = list(methods or profile.methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}: choose from {sorted(METHODS)}")
    timer = StageTimer()
    evaluate = Evaluator(profile, log)
    rows = []
    for model in models or profile.models:
        for train_on, eval_on in profile.protocols:
            log(f"== {model_slug(model)}: zero-shot on {eval_on}")
            start = time.perf_counter()
            result = evaluate(model, model, eval_on, result_path(profile, model, "zero-shot", eval_on),
                              model_name=model_slug(model))
            timer.add(f"evaluate zero-shot on {eval_on}", time.perf_counter() - start)
            rows.append(_row(model, "zero-shot", "-", eval_on, result))
            for method in methods:
                out_dir = run_dir(profile, model, method, train_on)
                log(f"== {model_slug(model)}: {method}, train on {train_on} -> evaluate on {eval_on}")
                start = time.perf_counter()
                ensure_run(profile, method, train_on, model, log=log)
                timer.add(f"train {method} on {train_on}", time.perf_counter() - start)
                start = time.perf_counter()
                result = evaluate(str(out_dir), model, eval_on, result_path(profile, model, method, eval_on),
                                  model_name=f"{model_slug(model)} + {method} ({train_on})")
                timer.add(f"evaluate {method} on {eval_on}", time.perf_counter() - start)
                rows.append(_row(model, method, train_on, eval_on, result))
    summary = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    start = time.perf_counter()
    write_summary(summary, Path(profile.results_dir))
    from .plots import save_study_figures
    save_study_figures(Path(profile.results_dir), summary)
    if profile.name == "cpu" and Path(profile.results_dir).resolve() == (Path.cwd() / "results").resolve():
        update_readme(summary, profile.results_dir)
    timer.add("summary and figures", time.perf_counter() - start)
    log("\nTime per stage\n" + timer.table())
    return summary


def _row(model: str, method: str, train_on: str, eval_on: str, result: dict) -> dict:
    row = {"model": model_slug(model), "method": method, "train_on": train_on, "eval_on": eval_on}
    row.update({key: result.get(key) for key in SUMMARY_COLUMNS if key not in row})
    return row


def write_summary(summary: pd.DataFrame, results_dir: Path) -> None:
    """``summary.csv`` (all digits) and ``summary.md`` (rounded, for people)."""
    results_dir.mkdir(parents=True, exist_ok=True)
    summary.to_csv(results_dir / "summary.csv", index=False)
    (results_dir / "summary.md").write_text(summary_markdown(summary) + "\n")


def summary_markdown(summary: pd.DataFrame) -> str:
    """The summary as a Markdown table: mAP to three decimals, rank distance to one."""
    shown = summary[["model", "method", "train_on", "eval_on", "mono_map", "cross_map", "multilingual_map",
                     "language_bias"]].copy()
    for column in ("mono_map", "cross_map", "multilingual_map"):
        shown[column] = shown[column].map(lambda v: f"{v:.3f}")
    shown["language_bias"] = shown["language_bias"].map(lambda v: f"{v:.1f}")
    shown.columns = ["model", "method", "trained on", "evaluated on", "mono mAP", "cross mAP",
                     "multilingual mAP", "rank distance"]
    return shown.to_markdown(index=False)


def load_results(results_dir: str | Path = "results") -> dict:
    """Every evaluation JSON below ``results_dir``: ``{(model, method, eval_on): result}``."""
    out = {}
    for path in sorted(Path(results_dir).glob("*/*/*.json")):
        out[(path.parent.parent.name, path.parent.name, path.stem)] = json.loads(path.read_text())
    return out


NOTEBOOKS = ("01_datasets", "02_hybrid_batches", "03_fine_tuning", "04_adversarial_baseline", "05_evaluation")


def execute_notebooks(profile: Profile | str | None = None, notebooks_dir: str | Path = "notebooks", log=print) -> None:
    """Execute the notebooks in place with papermill, so that they carry the outputs of this run."""
    import papermill

    profile = profile if isinstance(profile, Profile) else get_profile(profile)
    folder = Path(notebooks_dir)
    for name in NOTEBOOKS:
        path = folder / f"{name}.ipynb"
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: run from the repository root")
        log(f"== executing {path} (profile {profile.name})")
        start = time.perf_counter()
        # The profile reaches the kernel through the environment rather than as an injected parameters cell,
        # so the committed notebook keeps PROFILE = None and still runs in the smoke profile under the tests.
        previous = os.environ.get(PROFILE_ENV)
        os.environ[PROFILE_ENV] = profile.name
        try:
            papermill.execute_notebook(str(path), str(path), cwd=str(folder.resolve().parent), progress_bar=False)
        finally:
            if previous is None:
                os.environ.pop(PROFILE_ENV, None)
            else:
                os.environ[PROFILE_ENV] = previous
        log(f"  {time.perf_counter() - start:.0f} s")


def describe_findings(summary: pd.DataFrame) -> str:
    """Plain-language findings computed from the summary table, one bullet per statement.

    Notebook 05 and the README print this instead of typing numbers by hand.
    """
    lines = []
    for (model, eval_on), part in summary.groupby(["model", "eval_on"], sort=False):
        part = part.set_index("method")
        if "zero-shot" not in part.index:
            continue
        base = part.loc["zero-shot"]
        trained = part.drop(index="zero-shot")
        if trained.empty:
            continue
        lines.append(f"- **{model} on {eval_on}** (trained on {', '.join(sorted(set(trained['train_on'])))}):")
        for column, name in (("mono_map", "monolingual mAP"), ("cross_map", "cross-lingual mAP"),
                             ("multilingual_map", "multilingual mAP")):
            best = trained[column].idxmax()
            lines.append(f"  - best {name}: {best} {trained.loc[best, column]:.3f} "
                         f"(zero-shot {base[column]:.3f}, {trained.loc[best, column] - base[column]:+.3f})")
        least = trained["language_bias"].idxmin()
        lines.append(f"  - smallest rank distance (least language bias): {least} "
                     f"{trained.loc[least, 'language_bias']:.1f} (zero-shot {base['language_bias']:.1f})")
        for other in ("monolingual", "cross-lingual"):
            if {"hybrid", other} <= set(trained.index):
                h, o = trained.loc["hybrid"], trained.loc[other]
                lines.append(f"  - hybrid vs {other}: mono {h.mono_map - o.mono_map:+.3f}, cross "
                             f"{h.cross_map - o.cross_map:+.3f}, multilingual "
                             f"{h.multilingual_map - o.multilingual_map:+.3f}, rank distance "
                             f"{h.language_bias - o.language_bias:+.1f}")
        if {"adversarial", "monolingual"} <= set(trained.index):
            a, m = trained.loc["adversarial"], trained.loc["monolingual"]
            lines.append(f"  - adversarial vs monolingual (same batches, plus the discriminator): mono "
                         f"{a.mono_map - m.mono_map:+.3f}, cross {a.cross_map - m.cross_map:+.3f}, rank distance "
                         f"{a.language_bias - m.language_bias:+.1f}")
    return "\n".join(lines)


README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"


def update_readme(summary: pd.DataFrame, results_dir: str | Path, readme: str | Path = "README.md") -> bool:
    """Write the summary table, the findings and the key figure between the README's results markers.

    Returns False (and changes nothing) when the README or its markers are missing.
    """
    readme = Path(readme)
    if not readme.exists():
        return False
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        return False
    figures = sorted((Path(results_dir) / "figures").glob("*xquad-r_overview.png")) or sorted(
        (Path(results_dir) / "figures").glob("*_overview.png"))
    block = [README_START, "",
             "Generated by `python -m hybrid_utils reproduce` (profile `cpu`); do not edit by hand.", "",
             summary_markdown(summary), "", describe_findings(summary), ""]
    if figures:
        block += [f"![mAP per setting and method]({figures[0].as_posix()})", ""]
    block.append(README_END)
    head, rest = text.split(README_START, 1)
    tail = rest.split(README_END, 1)[1]
    readme.write_text(head + "\n".join(block) + tail)
    return True
