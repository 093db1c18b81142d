"""XQuAD-R and MLQA-R in the LAReQA format (the training pairs built from them: :mod:`hybrid_utils.pairs`).

LAReQA (Roy et al., 2020) turns the extractive QA sets XQuAD and MLQA into
*retrieval* tasks: every sentence of every paragraph is a candidate answer, and
the relevant candidate for a question is the sentence that contains the answer
span. Questions that share an ``id`` are translations of each other, so a
question has one relevant sentence in every language it was translated into.

Both data sets ship, xz-compressed, inside this package (``hybrid_utils/data``),
so everything works offline. ``load_lareqa`` also reads a folder of your own
LAReQA-format files, and ``download_lareqa`` fetches the upstream files when
you are online.

Example::

    >>> from hybrid_utils.data import load_lareqa
    >>> xquad = load_lareqa("xquad-r")
    >>> len(xquad.questions), len(xquad.candidates)
    (13090, 13014)

:func:`subset_lareqa` turns a set of question ids (e.g. the ones held out of training,
:func:`hybrid_utils.pairs.split_pairs_by_question_id`) into an evaluation set.

The package reads a whole column as ``dataset.questions["text"][:]``, a plain list: since ``datasets`` 4,
``dataset["column"]`` is a lazy ``Column`` whose iteration formats one row at a time, about 20 times slower
(0.2 s for the 20,534 MLQA-R sentences, which the evaluation and training read many times).
"""

from __future__ import annotations

import functools
import gzip
import json
import lzma
import os
import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Iterable, Sequence

from datasets import Dataset

DATASETS = {
    "xquad-r": ("ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh"),
    "mlqa-r": ("ar", "de", "en", "es", "hi", "vi", "zh"),
}
LANGUAGE_NAMES = {
    "ar": "Arabic", "de": "German", "el": "Greek", "en": "English", "es": "Spanish",
    "hi": "Hindi", "ru": "Russian", "th": "Thai", "tr": "Turkish", "vi": "Vietnamese",
    "zh": "Chinese",
}
UPSTREAM_URL = "https://raw.githubusercontent.com/google-research-datasets/lareqa/master/{name}/{language}.json"
_SUFFIXES = (".json", ".json.xz", ".json.gz")


class LAReQADataError(ValueError):
    """A LAReQA file is missing or does not have the expected structure."""


@dataclass
class LAReQADataset:
    """One LAReQA retrieval data set.

    Attributes:
        name: ``"xquad-r"``, ``"mlqa-r"`` or the folder a custom set was read from.
        languages: language codes, in a fixed (sorted) order.
        questions: a :class:`datasets.Dataset` with one row per question and language:
            ``id`` (shared by translations), ``language``, ``text``, ``answer_id``
            (the relevant candidate in the question's own language) and
            ``relevant_ids`` (the relevant candidates in every language of that ``id``).
        candidates: a :class:`datasets.Dataset` with one row per candidate sentence:
            ``id``, ``language``, ``sentence``, ``context`` (its paragraph) and
            ``paragraph_id``.
    """

    name: str
    languages: list[str]
    questions: Dataset
    candidates: Dataset
    source: str = ""
    _candidate_index: dict[str, int] = field(default=None, repr=False, compare=False)

    def __repr__(self) -> str:
        return (f"LAReQADataset(name={self.name!r}, languages={self.languages}, "
                f"questions={len(self.questions)}, candidates={len(self.candidates)})")

    def candidate(self, candidate_id: str) -> dict:
        """The candidate row with this id."""
        if self._candidate_index is None:
            self._candidate_index = {cid: i for i, cid in enumerate(self.candidates["id"][:])}
        return self.candidates[self._candidate_index[candidate_id]]

    def sizes(self) -> "dict[str, dict[str, int]]":
        """Questions and candidates per language."""
        out = {lang: {"questions": 0, "candidates": 0} for lang in self.languages}
        for lang in self.questions["language"][:]:
            out[lang]["questions"] += 1
        for lang in self.candidates["language"][:]:
            out[lang]["candidates"] += 1
        return out

    def translations(self, question_id: str) -> dict[str, dict]:
        """All language versions of one question: ``{language: {"question", "answer", "context"}}``."""
        rows = [i for i, qid in enumerate(self.questions["id"][:]) if qid == question_id]
        if not rows:
            raise KeyError(f"no question with id {question_id!r} in {self.name}")
        out = {}
        for row in self.questions.select(rows):
            answer = self.candidate(row["answer_id"])
            out[row["language"]] = {"question": row["text"], "answer": answer["sentence"],
                                    "context": answer["context"]}
        return out


# --------------------------------------------------------------------------- reading files

def bundled_data_dir(name: str) -> Path:
    """Folder of the compressed copy of ``name`` that ships with the package."""
    return Path(str(resources.files("hybrid_utils") / "data" / "lareqa" / name))


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}: choose one of {sorted(DATASETS)}, "
                         f"or pass the path of a folder with LAReQA-format <language>.json files")


def check_languages(languages: Iterable[str], available: Sequence[str], where: str) -> list[str]:
    languages = list(languages)
    if not languages:
        raise ValueError(f"empty language list for {where}: choose some of {list(available)}")
    unknown = [lang for lang in languages if lang not in available]
    if unknown:
        raise ValueError(f"unknown language code(s) {unknown} for {where}: "
                         f"available are {list(available)}")
    return sorted(dict.fromkeys(languages))


def _find_file(folder: Path, language: str) -> Path | None:
    for suffix in _SUFFIXES:
        path = folder / f"{language}{suffix}"
        if path.exists():
            return path
    return None


def _read_json(path: Path) -> dict:
    opener = {".xz": lzma.open, ".gz": gzip.open}.get(path.suffix, open)
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            return json.load(handle)
    except (json.JSONDecodeError, lzma.LZMAError, OSError, EOFError, UnicodeDecodeError) as err:
        raise LAReQADataError(
            f"{path} is not a readable LAReQA JSON file ({err}). Replace it with the original "
            f"file (see hybrid_utils.data.download_lareqa) or remove it.") from err


def _stat_key(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size


@functools.lru_cache(maxsize=32)
def _parsed_file(path: str, mtime_ns: int, size: int, language: str, next_candidate: int):
    """:func:`_parse_language` of one file, once per process while the file is unchanged (modification time and
    size are part of the key): a study loads the same data sets dozens of times, at 0.4-0.6 s each to decompress
    and parse (0.1-0.2 s from this cache) on 2 fp32 cores."""
    return _parse_language(_read_json(Path(path)), language, Path(path), next_candidate)


def _parse_language(doc: dict, language: str, path: Path, next_candidate: int):
    """Candidates and questions of one language file, with their answer sentences."""
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise LAReQADataError(f"{path}: expected a SQuAD-style object with a 'data' list")
    candidates, questions = [], []
    seen_paragraphs: dict[str, list[str]] = {}
    for article in doc["data"]:
        for p_index, paragraph in enumerate(article.get("paragraphs", [])):
            try:
                context = paragraph["context"]
                breaks = paragraph["sentence_breaks"]
                sentences = paragraph.get("sentences") or [context[s:e + 1] for s, e in breaks]
                qas = paragraph["qas"]
            except KeyError as err:
                raise LAReQADataError(
                    f"{path}: a paragraph of article {article.get('title', '?')!r} has no {err} "
                    f"field; LAReQA files need 'context', 'sentence_breaks' and 'qas' per paragraph") from err
            if len(sentences) != len(breaks):
                raise LAReQADataError(f"{path}: {len(sentences)} sentences but {len(breaks)} sentence_breaks "
                                      f"in a paragraph of {article.get('title', '?')!r}")
            if context not in seen_paragraphs:  # a candidate is a sentence of a *distinct* paragraph
                ids = []
                paragraph_id = f"{language}-p{len(seen_paragraphs):05d}"
                for sentence in sentences:
                    cid = f"{language}-{next_candidate + len(candidates):06d}"
                    ids.append(cid)
                    candidates.append({"id": cid, "language": language, "sentence": sentence,
                                       "context": context, "paragraph_id": paragraph_id})
                seen_paragraphs[context] = ids
            sentence_ids = seen_paragraphs[context]
            for qa in qas:
                try:
                    start = qa["answers"][0]["answer_start"]
                    qid, text = str(qa["id"]), qa["question"]
                except (KeyError, IndexError) as err:
                    raise LAReQADataError(f"{path}: question without id/question/answers ({err})") from err
                answer = next((i for i, (s, e) in enumerate(breaks) if s <= start <= e), None)
                if answer is None:
                    raise LAReQADataError(f"{path}: answer start {start} of question {qid} lies in no sentence")
                questions.append({"id": qid, "language": language, "text": text,
                                  "answer_id": sentence_ids[answer]})
    return candidates, questions


def load_lareqa(name_or_path: str = "xquad-r", languages: Sequence[str] | None = None,
                limit_questions: int | None = None) -> LAReQADataset:
    """Load XQuAD-R, MLQA-R or a folder of LAReQA-format files.

    Args:
        name_or_path: ``"xquad-r"`` or ``"mlqa-r"`` (the copies shipped with the package),
            or a folder holding ``<language>.json`` files (also ``.json.xz`` / ``.json.gz``).
        languages: keep only these languages (default: all of the data set).
        limit_questions: keep only the first N question ids, and only the paragraphs they
            come from as candidates, for quick runs. The pool is then much smaller than
            the real one, so the numbers are not comparable with full runs.

    Returns:
        a :class:`LAReQADataset`.
    """
    if name_or_path in DATASETS:
        name, folder = name_or_path, bundled_data_dir(name_or_path)
        available = DATASETS[name]
    else:
        folder = Path(name_or_path).expanduser()
        if not folder.is_dir():
            _check_name(str(name_or_path))
        name = folder.name
        available = sorted({p.name.split(".")[0] for p in folder.iterdir()
                            if any(p.name.endswith(s) for s in _SUFFIXES)})
        if not available:
            raise LAReQADataError(f"{folder} holds no <language>.json files in LAReQA format")
    languages = check_languages(available if languages is None else languages, available, name)

    candidates, questions = [], []
    for language in languages:
        path = _find_file(folder, language)
        if path is None:
            raise LAReQADataError(f"missing file for language {language!r} in {folder}: reinstall the "
                                  f"package (pip install -e .) or restore {language}.json")
        c, q = _parsed_file(str(path), *_stat_key(path), language, len(candidates))
        candidates += c  # the cached rows themselves: only the question rows below are changed, and copied first
        questions += [dict(row) for row in q]

    answers_by_id: dict[str, list[str]] = defaultdict(list)
    for q in questions:
        answers_by_id[q["id"]].append(q["answer_id"])
    if limit_questions is not None:
        if limit_questions < 1:
            raise ValueError("limit_questions must be a positive number of question ids")
        keep = set(list(dict.fromkeys(q["id"] for q in questions))[:limit_questions])
        questions = [q for q in questions if q["id"] in keep]
        answer_ids = {a for qid in keep for a in answers_by_id[qid]}
        paragraphs = {c["paragraph_id"] for c in candidates if c["id"] in answer_ids}
        candidates = [c for c in candidates if c["paragraph_id"] in paragraphs]
    for q in questions:
        q["relevant_ids"] = answers_by_id[q["id"]]
    return LAReQADataset(name=name, languages=languages, source=str(folder),
                         questions=Dataset.from_list(questions), candidates=Dataset.from_list(candidates))


def download_lareqa(name: str, destination: str | os.PathLike, languages: Sequence[str] | None = None,
                    timeout: float = 30.0) -> Path:
    """Download the upstream LAReQA files of ``name`` into ``destination/<name>/``.

    Needs internet; the package already ships the same files, so this is only for
    checking the copy against upstream or for users who want the original files.
    """
    _check_name(name)
    languages = check_languages(DATASETS[name] if languages is None else languages, DATASETS[name], name)
    folder = Path(destination) / name
    folder.mkdir(parents=True, exist_ok=True)
    for language in languages:
        url = UPSTREAM_URL.format(name=name, language=language)
        target = folder / f"{language}.json"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                payload = response.read()
        except (urllib.error.URLError, OSError) as err:
            raise ConnectionError(f"could not download {url} ({err}). You seem to be offline: use the copy "
                                  f"shipped with the package, load_lareqa({name!r}).") from err
        tmp = target.with_suffix(".part")
        tmp.write_bytes(payload)
        tmp.replace(target)  # never leave a half-written file behind
    return folder


# --------------------------------------------------------------------------- subsets

def subset_lareqa(dataset: LAReQADataset, question_ids, pool: str = "paragraphs") -> LAReQADataset:
    """A LAReQA data set restricted to the questions with these ids.

    Args:
        dataset: the full data set.
        question_ids: ids to keep (all their language versions are kept).
        pool: ``"paragraphs"`` keeps only the candidates from the paragraphs of the kept
            questions' answers (small and fast, like ``load_lareqa(limit_questions=...)``);
            ``"all"`` keeps every candidate (the real, harder pool).
    """
    if pool not in ("paragraphs", "all"):
        raise ValueError("pool must be 'paragraphs' or 'all'")
    keep = set(question_ids)
    rows = [i for i, q in enumerate(dataset.questions["id"][:]) if q in keep]
    if not rows:
        raise ValueError("none of the question ids occurs in the data set")
    questions = dataset.questions.select(rows)
    candidates = dataset.candidates
    if pool == "paragraphs":
        relevant = {cid for ids in questions["relevant_ids"][:] for cid in ids}
        paragraphs = {p for cid, p in zip(candidates["id"][:], candidates["paragraph_id"][:]) if cid in relevant}
        candidates = candidates.select([i for i, p in enumerate(candidates["paragraph_id"][:]) if p in paragraphs])
    languages = sorted(set(questions["language"][:]) | set(candidates["language"][:]))
    return LAReQADataset(name=f"{dataset.name}[{len(keep)} ids]", languages=languages, questions=questions,
                         candidates=candidates, source=dataset.source)
