"""LAReQA in the BEIR layout, and a local BEIR folder as an mteb retrieval task.

BEIR (Thakur et al., 2021) stores a retrieval data set as three files::

    corpus.jsonl      {"_id": ..., "title": ..., "text": ...}  one passage per line
    queries.jsonl     {"_id": ..., "text": ...}                one query per line
    qrels/test.tsv    query-id <TAB> corpus-id <TAB> score     (with that header line)

:func:`export_beir` writes one language of XQuAD-R or MLQA-R that way: the questions of that
language are the queries, that language's candidate sentences the corpus, and each question's
answer sentence its one relevant passage (LAReQA's monolingual setting, in the form every IR
tool reads: pyserini, BEIR, ir-measures, mteb). :func:`beir_task` turns such a folder into an
mteb retrieval task, so :mod:`hybrid_utils.benchmarks` evaluates it with the same code as the
hub benchmarks (BEIR, Natural Questions, MIRACL). The package's own data make it the offline
stand-in for those: same code path, local data.

**Titles.** The corpus has empty titles: a passage is the candidate *sentence* alone. LAReQA
retrieves sentences, and the project's ``evaluate`` encodes sentences alone by default; mteb
would prepend a title to the text, and with the paragraph as title all sentences of a paragraph
would look almost alike to the encoder, so the task would become "find the paragraph" and the
answer sentence could no longer be told from its neighbours. ``paragraph_id`` stays in each
corpus line's ``metadata`` for whoever wants paragraph-level evaluation.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from ..data import LANGUAGE_NAMES, load_lareqa

__all__ = ["ISO_LANGUAGES", "BEIRFolderError", "export_beir", "read_beir", "beir_task", "exact_search_metrics"]

#: LAReQA language codes -> the ISO 639-3 + script codes mteb uses in task metadata.
ISO_LANGUAGES = {
    "ar": "ara-Arab", "de": "deu-Latn", "el": "ell-Grek", "en": "eng-Latn", "es": "spa-Latn",
    "hi": "hin-Deva", "ru": "rus-Cyrl", "th": "tha-Thai", "tr": "tur-Latn", "vi": "vie-Latn",
    "zh": "zho-Hans",
}
_INFO_FILE = "lareqa_export.json"
#: the dataset revision of a task made from a local folder (:func:`beir_task`): its data needs no hub
LOCAL_REVISION = "local"


class BEIRFolderError(ValueError):
    """A folder is not in the BEIR layout (missing file, bad line, qrels naming unknown ids)."""


def _write_jsonl(path: Path, rows) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def export_beir(dataset_name: str, language: str, output_dir, limit_questions: int | None = None) -> Path:
    """Write one language of a LAReQA data set as a BEIR folder (monolingual retrieval).

    Args:
        dataset_name: ``"xquad-r"``, ``"mlqa-r"`` or a folder of LAReQA files (see :func:`load_lareqa`).
        language: the language of queries and corpus, e.g. ``"en"`` (XQuAD-R English: 1,190 queries,
            1,180 sentences).
        output_dir: the folder to write (created; existing files of the layout are replaced).
        limit_questions: keep only the first N question ids and their paragraphs (quick runs and
            tests; numbers then differ from the full pool's).

    Returns:
        the folder, holding ``corpus.jsonl``, ``queries.jsonl``, ``qrels/test.tsv`` and
        ``lareqa_export.json`` (where it came from).
    """
    if not isinstance(language, str) or "," in language:
        raise ValueError(f"language must be one language code such as 'en', got {language!r}")
    dataset = load_lareqa(dataset_name, languages=[language], limit_questions=limit_questions)
    folder = Path(output_dir).expanduser()
    try:
        (folder / "qrels").mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(f"cannot create the BEIR folder {folder}: {err}") from err

    candidates = dataset.candidates
    _write_jsonl(folder / "corpus.jsonl", ({"_id": cid, "title": "", "text": sentence,
                                             "metadata": {"paragraph_id": paragraph}}
                                            for cid, sentence, paragraph in zip(
                                                candidates["id"], candidates["sentence"], candidates["paragraph_id"])))
    questions = dataset.questions
    _write_jsonl(folder / "queries.jsonl", ({"_id": qid, "text": text}
                                             for qid, text in zip(questions["id"], questions["text"])))
    with (folder / "qrels" / "test.tsv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(["query-id", "corpus-id", "score"])
        for qid, answer in zip(questions["id"], questions["answer_id"]):
            writer.writerow([qid, answer, 1])
    info = {"source": dataset.name, "language": language, "queries": len(questions), "corpus": len(candidates),
            "limit_questions": limit_questions, "title": "empty: passages are candidate sentences alone"}
    (folder / _INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return folder


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                row["_id"] = str(row["_id"])
            except (ValueError, KeyError, TypeError) as err:
                raise BEIRFolderError(f"{path}, line {number}: not a JSON object with an '_id' ({err})") from err
            rows.append(row)
    return rows


def read_beir(folder, split: str = "test") -> tuple[list[dict], list[dict], dict[str, dict[str, int]]]:
    """Read a BEIR folder.

    Args:
        folder: holds ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``.
        split: the qrels file to read.

    Returns:
        ``(corpus, queries, qrels)``: corpus rows ``{"id", "title", "text"}``, the query rows
        ``{"id", "text"}`` that have at least one relevant passage, and
        ``{query_id: {corpus_id: score}}``.
    """
    folder = Path(folder).expanduser()
    paths = {"corpus": folder / "corpus.jsonl", "queries": folder / "queries.jsonl",
             "qrels": folder / "qrels" / f"{split}.tsv"}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise BEIRFolderError(f"{folder} is not a BEIR folder: missing {', '.join(missing)}. Write one with "
                              "`python -m hybrid_utils export-beir xquad-r --language en --output DIR`.")
    corpus = [{"id": r["_id"], "title": r.get("title") or "", "text": r.get("text") or ""}
              for r in _read_jsonl(paths["corpus"])]
    qrels: dict[str, dict[str, int]] = {}
    with paths["qrels"].open(encoding="utf-8", newline="") as handle:
        for number, row in enumerate(csv.reader(handle, delimiter="\t"), 1):
            if not row or (number == 1 and row[0] == "query-id"):
                continue
            try:
                qid, cid, score = row[0], row[1], int(row[2])
            except (IndexError, ValueError) as err:
                raise BEIRFolderError(f"{paths['qrels']}, line {number}: expected query-id, corpus-id, "
                                      f"integer score ({err})") from err
            qrels.setdefault(qid, {})[cid] = score
    corpus_ids = {row["id"] for row in corpus}
    unknown = sorted({cid for docs in qrels.values() for cid in docs} - corpus_ids)
    if unknown:
        raise BEIRFolderError(f"{paths['qrels']} names {len(unknown)} passages missing from corpus.jsonl "
                              f"(e.g. {unknown[:3]})")
    queries = [{"id": r["_id"], "text": r.get("text") or ""} for r in _read_jsonl(paths["queries"])
               if r["_id"] in qrels]
    if not queries:
        raise BEIRFolderError(f"no query of {paths['queries']} has a relevant passage in {paths['qrels']}")
    return corpus, queries, qrels


def beir_task(folder, name: str | None = None, split: str = "test"):
    """An mteb retrieval task (an :class:`mteb.abstasks.retrieval.AbsTaskRetrieval`) reading a BEIR folder.

    mteb then runs its own retrieval evaluation on it (encoding with the model's query and
    document prompts, exact cosine search, nDCG/Recall/MRR at its k values), exactly as for
    the hub tasks.

    Args:
        folder: a BEIR folder (see :func:`export_beir`).
        name: task name in the results (default: ``"BEIR:<folder name>"``).
        split: the qrels split to evaluate.
    """
    from datasets import Dataset
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.task_metadata import TaskMetadata

    folder = Path(folder).expanduser()
    corpus, queries, qrels = read_beir(folder, split)  # fail now, not inside mteb
    info_path = folder / _INFO_FILE
    info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}
    language = info.get("language", "en")
    source = info.get("source", folder.name)
    metadata = TaskMetadata(
        name=name or f"BEIR:{folder.name}",
        description=f"Local BEIR folder {folder} ({source}, {LANGUAGE_NAMES.get(language, language)}): "
                    "monolingual question -> answer-sentence retrieval.",
        reference="https://github.com/google-research-datasets/lareqa",
        dataset={"path": str(folder), "revision": LOCAL_REVISION},
        type="Retrieval", category="t2t", modalities=["text"], eval_splits=[split],
        eval_langs=[ISO_LANGUAGES.get(language, "eng-Latn")], main_score="ndcg_at_10",
        date=("2020-04-11", "2020-04-11"), domains=["Encyclopaedic", "Written"], task_subtypes=["Question answering"],
        license="cc-by-sa-4.0", annotations_creators="human-annotated", dialect=[], sample_creation="found",
        bibtex_citation="",
    )

    class LocalBEIRTask(AbsTaskRetrieval):
        def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
            if self.data_loaded:
                return
            self.dataset = {"default": {split: {
                "corpus": Dataset.from_list(corpus), "queries": Dataset.from_list(queries),
                "relevant_docs": qrels, "top_ranked": None}}}
            self.data_loaded = True

    LocalBEIRTask.metadata = metadata
    LocalBEIRTask.__name__ = LocalBEIRTask.__qualname__ = "LocalBEIRTask"
    return LocalBEIRTask()


def exact_search_metrics(model, folder, split: str = "test", batch_size: int = 64) -> dict[str, float]:
    """nDCG@10, Recall@10, Recall@100 and MRR@10 of a BEIR folder *without* mteb: a cross-check.

    Encodes with :func:`hybrid_utils.encoder.encode_texts` (prompts ``"query"`` / ``"passage"``),
    searches the top 100 with :class:`hybrid_utils.search.SearchIndex` (exact) and scores with
    `ir-measures <https://ir-measur.es>`_ (pytrec_eval). Titles, if any, are prepended to the text
    as mteb does.
    """
    import ir_measures
    from ir_measures import RR, R, nDCG

    from ..encoder import encode_texts
    from ..search import SearchIndex

    corpus, queries, qrels = read_beir(folder, split)
    passages = [(row["title"] + " " + row["text"]).strip() for row in corpus]
    doc = encode_texts(model, passages, prompt_name="passage", batch_size=batch_size, show_progress_bar=False)
    query = encode_texts(model, [row["text"] for row in queries], prompt_name="query", batch_size=batch_size,
                         show_progress_bar=False)
    scores, indices = SearchIndex(doc).search(query, k=min(100, len(corpus)))
    run = {q["id"]: {corpus[j]["id"]: float(s) for s, j in zip(row_scores, row_indices)}
           for q, row_scores, row_indices in zip(queries, scores, indices)}
    names = {"ndcg_at_10": nDCG @ 10, "recall_at_10": R @ 10, "recall_at_100": R @ 100, "mrr_at_10": RR @ 10}
    values = ir_measures.calc_aggregate(list(names.values()), qrels, run)
    return {key: float(values[measure]) for key, measure in names.items()}
