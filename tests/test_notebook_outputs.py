"""Committed notebooks (chapters and solutions) carry no library noise in their outputs.

A student should read what the chapter prints, not warnings, per-step training dicts or
placeholders of HTML the viewer cannot show. ``python -m hybrid_utils reproduce --notebooks``
re-executes the chapters; this test fails when an executed output still holds such noise.
"""
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted((ROOT / "solutions").glob("*.ipynb"))

#: text that must never appear in a committed output, and where it came from
FORBIDDEN = {
    "Warning": "a Python or library warning (e.g. TqdmWarning, UserWarning)",
    "'grad_norm'": "the trainer's per-step log dict (PrinterCallback / ProgressCallback)",
    "Writing model shards": "transformers' save progress bar",
    "Computing widget examples": "sentence-transformers' model-card progress bar",
    "<IPython.core.display.HTML object>": "transformers' NotebookProgressCallback table",
    "[transformers] ": "a transformers log message (e.g. 'The tokenizer has new PAD/BOS/EOS tokens')",
}


def output_texts(notebook: dict):
    """``(cell index, text)`` of every output: streams, plain-text representations, errors."""
    for index, cell in enumerate(notebook.get("cells", [])):
        for output in cell.get("outputs", []):
            parts = [output.get("text", "")]
            parts += [output.get("data", {}).get("text/plain", "")]
            parts += output.get("traceback", [])
            for part in parts:
                yield index, "".join(part) if isinstance(part, list) else str(part)


def noise_in(notebook: dict) -> list[str]:
    """One line per forbidden text found: ``cell <i>: '<text>' (<where it comes from>)``."""
    found = []
    for index, text in output_texts(notebook):
        for needle, source in FORBIDDEN.items():
            if needle in text:
                found.append(f"cell {index}: {needle!r} ({source})")
    return found


def test_the_check_finds_each_kind_of_noise():
    dirty = {"cells": [
        {"cell_type": "code", "outputs": [{"output_type": "stream", "name": "stderr",
                                           "text": ["tqdm/auto.py:21: TqdmWarning: IProgress not found"]}]},
        {"cell_type": "code", "outputs": [{"output_type": "stream", "name": "stdout",
                                           "text": "{'loss': '0.56', 'grad_norm': '5.58', 'epoch': '0.006'}\n"},
                                          {"output_type": "stream", "name": "stderr",
                                           "text": "[transformers] The tokenizer has new PAD/BOS/EOS tokens\n"}]},
        {"cell_type": "code", "outputs": [
            {"output_type": "display_data", "data": {"text/plain": "Writing model shards:   0%|  | 0/1"}},
            {"output_type": "display_data", "data": {"text/plain": ["Computing widget examples:   0%"]}},
            {"output_type": "display_data", "data": {"text/html": "<table/>",
                                                     "text/plain": "<IPython.core.display.HTML object>"}}]},
        {"cell_type": "code", "outputs": [{"output_type": "stream", "name": "stdout",
                                           "text": "saved runs/hybrid (step 3, 6 s)\n"}]},
    ]}
    assert [line.split(":")[0] for line in noise_in(dirty)] == ["cell 0", "cell 1", "cell 1", "cell 2", "cell 2", "cell 2"]
    assert noise_in({"cells": dirty["cells"][3:]}) == []


def test_there_are_notebooks_to_check():
    assert len([p for p in NOTEBOOKS if p.parent.name == "notebooks"]) >= 5


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_committed_outputs_are_clean(path):
    found = noise_in(json.loads(path.read_text(encoding="utf-8")))
    assert not found, (f"{path.relative_to(ROOT)} has library noise in its outputs; re-execute it "
                       f"(python -m hybrid_utils reproduce --notebooks) after hybrid_utils.notebook.setup():\n  "
                       + "\n  ".join(found))


#: the longest output a committed cell may show: a student reads it, so a longer one belongs in a file
MAX_OUTPUT_LINES = 60


def long_outputs(notebook: dict, limit: int = MAX_OUTPUT_LINES) -> list[str]:
    """``cell <i>: <n> lines`` for every output text (stream, plain text, traceback) longer than ``limit`` lines."""
    return [f"cell {index}: {text.count(chr(10)) + 1} lines" for index, text in output_texts(notebook)
            if text.count("\n") + 1 > limit]


def test_the_length_check_counts_lines():
    cell = {"cell_type": "code", "outputs": [{"output_type": "stream", "name": "stdout", "text": "x\n" * 70}]}
    assert long_outputs({"cells": [cell]}) == ["cell 0: 71 lines"]
    assert long_outputs({"cells": [cell]}, limit=80) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_committed_outputs_are_short(path):
    found = long_outputs(json.loads(path.read_text(encoding="utf-8")))
    assert not found, f"{path.relative_to(ROOT)} has outputs over {MAX_OUTPUT_LINES} lines:\n  " + "\n  ".join(found)


@pytest.mark.parametrize("chapter", ["02", "03", "04", "05"])
def test_core_chapters_build_their_idea_by_hand(chapter):
    """Each of these chapters writes the key idea as a function of its own before calling the library's version."""
    path = next((ROOT / "notebooks").glob(f"{chapter}_*.ipynb"))
    sources = ["".join(c["source"]) for c in json.loads(path.read_text(encoding="utf-8"))["cells"]
               if c["cell_type"] == "code"]
    assert any(line.startswith("def ") for source in sources for line in source.splitlines()), path.name


def test_no_chapter_imports_private_names():
    import re
    for path in NOTEBOOKS:
        for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
            source = "".join(cell["source"]) if cell["cell_type"] == "code" else ""
            private = re.findall(r"from hybrid_utils[\w.]* import [^\n]*\b(_\w+)", source)
            private += re.findall(r"\bhu\.(?:\w+\.)*(_\w+)", source)
            assert not private, f"{path.name} imports private names {private}"
