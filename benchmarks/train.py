"""Training throughput on this machine: pairs/s at batch 32 for each trainable setting, plus peak memory.

Settings (each in its own subprocess, so that ``ru_maxrss`` is that setting's own):

* ``full``: full fine-tuning;
* ``no-embeddings``: everything but the embedding layer;
* ``old-cpu-default``: the CPU default before issue 8 (embeddings and lower 8 layers frozen,
  top 4 trained, every step runs all 12 layers on padded batches);
* ``cpu-default-uncached``: today's profile (``hybrid_utils.profiles``: its number of trainable
  top layers) without the training cache, to separate the two effects;
* ``cpu-default``: today's CPU default: the profile's layers, the frozen layers computed
  once per distinct text (:class:`hybrid_utils.plumbing.training_cache.TrainingPrefixCache`) and the top
  layers run on packed tokens.

Each runs ``hybrid_utils.training`` on MLQA-R hybrid batches (``--limit-pairs`` pairs) for a few
untimed steps and then ``--steps`` timed steps, read from the per-step timestamps of
``train_log.jsonl``. For ``cpu-default`` the cache is filled first (``warm``), as it is after the
first run of a study, and the one-time cost is printed separately (seconds per 1,000 texts).

``--fp32`` forces fp32 whatever the CPU (the goal holds for fp32 on 2 cores without AMX); the
ratio lines compare ``cpu-default`` with ``old-cpu-default`` (the goal: at least 3x) and with
``cpu-default-uncached`` (what the cache alone gives), in the same precision.

Numbers are wall-clock: other processes on the machine slow them down (the load average is
printed at the end), and with more busy processes than cores PyTorch's OpenMP threads
oversubscribe the CPU, which can cost a factor of 2-4.

    python benchmarks/train.py --fp32                       # all four settings in fp32
    python benchmarks/train.py --fp32 --settings old-cpu-default cpu-default
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SETTINGS = ("full", "no-embeddings", "old-cpu-default", "cpu-default-uncached", "cpu-default")
#: the CPU default before the training cache (issue 8): top 4 of 12 layers, every layer run at every step
OLD_TRAINABLE_LAYERS = 4


def _one(setting: str, steps: int, warmup: int, batch_size: int, bf16: str, max_seq_length: int,
         limit_pairs: int) -> dict:
    import torch

    from hybrid_utils.config import TrainConfig
    from hybrid_utils.training import build_training_run
    from hybrid_utils.runs import load_train_log

    trainable = "cpu-default" if setting.endswith("cpu-default") or setting.startswith("cpu-default") else setting
    layers = {"old-cpu-default": OLD_TRAINABLE_LAYERS}.get(setting, TrainConfig().num_trainable_layers)
    with tempfile.TemporaryDirectory() as tmp:
        config = TrainConfig(method="hybrid", train_on="mlqa-r", batch_size=batch_size, steps=warmup + steps,
                             num_trainable_layers=layers,
                             trainable=trainable, save_steps=0, output_dir=tmp, show_progress=False, warmup=0.0,
                             bf16={"on": True, "off": False}.get(bf16, "auto"), max_seq_length=max_seq_length,
                             limit_pairs=limit_pairs, prefix_cache=setting == "cpu-default")
        run = build_training_run(config, log=None)
        warm = None
        if run.prefix_cache is not None:
            prompts = run.trainer.args.prompts or {}
            start = time.perf_counter()
            stats = run.prefix_cache.warm({prompts.get("question", ""): run.pairs["question"],
                                           prompts.get("answer", ""): run.pairs["answer"]})
            warm = {"texts": stats["cached_texts"], "seconds": round(time.perf_counter() - start, 1)}
        cpu0 = time.process_time()
        with run.attached():
            run.trainer.train()
        cpu = time.process_time() - cpu0
        frame = load_train_log(tmp)
        bf16_used = bool(run.trainer.args.bf16)
        trainable_params = sum(p.numel() for p in run.model.parameters() if p.requires_grad)
    t = frame.set_index("step")["elapsed_s"]
    seconds = float(t.loc[warmup + steps] - t.loc[warmup])
    return {
        "setting": setting, "bf16": bf16_used, "threads": torch.get_num_threads(),
        "steps_timed": steps, "batch_size": batch_size, "max_seq_length": max_seq_length,
        "seconds_per_step": round(seconds / steps, 3), "pairs_per_s": round(steps * batch_size / seconds, 1),
        "trainable_params_M": round(trainable_params / 1e6, 1), "trainable_layers": layers,
        "peak_rss_GB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "process_cpu_s": round(cpu, 1), "cache_warm": warm,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--steps", type=int, default=8, help="timed steps per setting (default %(default)s)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-seq-length", type=int, default=64)
    parser.add_argument("--bf16", nargs="+", default=["off", "auto"], choices=["auto", "on", "off"],
                        help="precision(s) to run (default: fp32 and auto)")
    parser.add_argument("--fp32", action="store_true", help="fp32 only, whatever the CPU (same as --bf16 off)")
    parser.add_argument("--limit-pairs", type=int, default=3000,
                        help="training pairs (whole question ids) the runs draw from (default %(default)s)")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--_one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args._one:  # child process: one setting, print one JSON line
        setting, bf16 = args._one.split(":")
        print("RESULT " + json.dumps(_one(setting, args.steps, args.warmup, args.batch_size, bf16,
                                          args.max_seq_length, args.limit_pairs)), flush=True)
        return 0

    if args.fp32:
        args.bf16 = ["off"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    rows = []
    print(f"{'setting':<22}{'bf16':>6}{'thr':>5}{'s/step':>9}{'pairs/s':>9}{'trainable':>11}{'peak RSS':>10}", flush=True)
    for bf16 in args.bf16:
        for setting in args.settings:
            cmd = [sys.executable, __file__, "--_one", f"{setting}:{bf16}", "--steps", str(args.steps),
                   "--warmup", str(args.warmup), "--batch-size", str(args.batch_size),
                   "--max-seq-length", str(args.max_seq_length), "--limit-pairs", str(args.limit_pairs)]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if proc.returncode or line is None:
                print(f"{setting}: failed\n{proc.stderr[-2000:]}", flush=True)
                continue
            row = json.loads(line[len("RESULT "):])
            rows.append(row)
            print(f"{row['setting']:<22}{str(row['bf16']):>6}{row['threads']:>5}{row['seconds_per_step']:>9.2f}"
                  f"{row['pairs_per_s']:>9.1f}{row['trainable_params_M']:>10.1f}M{row['peak_rss_GB']:>8.2f}GB",
                  flush=True)
    for bf16 in sorted({r["bf16"] for r in rows}):
        by = {r["setting"]: r for r in rows if r["bf16"] == bf16}
        if "cpu-default" in by and by["cpu-default"].get("cache_warm"):
            w = by["cpu-default"]["cache_warm"]
            print(f"one-time cache fill (bf16={bf16}): {w['texts']} texts in {w['seconds']:.1f} s "
                  f"({1000 * w['seconds'] / max(1, w['texts']):.1f} s per 1,000 texts)")
        for other, what in (("old-cpu-default", "the old CPU default (goal: >= 3x)"),
                            ("cpu-default-uncached", "the same layers without the cache")):
            if {"cpu-default", other} <= by.keys():
                ratio = by["cpu-default"]["pairs_per_s"] / by[other]["pairs_per_s"]
                print(f"new CPU default vs {what} (bf16={bf16}): {by['cpu-default']['pairs_per_s']:.1f} / "
                      f"{by[other]['pairs_per_s']:.1f} pairs/s = {ratio:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    try:
        load = os.getloadavg()[0]
        print(f"(load average during the run: {load:.1f} on {os.cpu_count()} cores; other processes slow "
              f"the wall-clock numbers down)")
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
