"""Training throughput on this machine: pairs/s at batch 32 for three trainable settings, plus peak memory.

For each setting (``full`` fine-tuning, frozen embeddings ``no-embeddings``, and the CPU
default: embeddings and the lower 8 layers frozen, top 4 trained) it runs
``hybrid_utils.training.train`` on MLQA-R hybrid batches for a few warm-up steps and then
a fixed number of timed steps, reading the per-step timestamps of ``train_log.jsonl``
(the first ``--warmup`` steps are excluded). Each setting runs in its own subprocess so
that ``ru_maxrss`` (peak resident memory) is that setting's own.

Numbers are wall-clock: other processes on the machine slow them down (the load average
is printed at the end), and with more busy processes than cores PyTorch's OpenMP threads
oversubscribe the CPU, which can cost a factor of 2-4.

    python benchmarks/train.py                     # all three, fp32 and bf16 where supported
    python benchmarks/train.py --steps 10 --settings cpu-default --bf16 off
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

SETTINGS = ("full", "no-embeddings", "cpu-default")


def _one(setting: str, steps: int, warmup: int, batch_size: int, bf16: str, max_seq_length: int) -> dict:
    import torch

    from hybrid_utils.training import TrainConfig, load_train_log, train

    with tempfile.TemporaryDirectory() as tmp:
        cpu0 = time.process_time()
        config = TrainConfig(method="hybrid", train_on="mlqa-r", batch_size=batch_size, steps=warmup + steps,
                             trainable=setting, save_steps=0, output_dir=tmp, show_progress=False, warmup=0.0,
                             bf16={"on": True, "off": False}.get(bf16, "auto"), max_seq_length=max_seq_length)
        train(config, log=None)
        frame = load_train_log(tmp)
        info = json.loads((Path(tmp) / "train_config.json").read_text())
        cpu = time.process_time() - cpu0
    t = frame.set_index("step")["elapsed_s"]
    seconds = float(t.loc[warmup + steps] - t.loc[warmup])
    return {
        "setting": setting, "bf16": info["summary"]["bf16"], "threads": torch.get_num_threads(),
        "steps_timed": steps, "batch_size": batch_size, "max_seq_length": max_seq_length,
        "seconds_per_step": round(seconds / steps, 3), "pairs_per_s": round(steps * batch_size / seconds, 1),
        "trainable_params_M": round(info["data"]["trainable"]["trainable_parameters"] / 1e6, 1),
        "peak_rss_GB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "process_cpu_s": round(cpu, 1),
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
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--_one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args._one:  # child process: one setting, print one JSON line
        setting, bf16 = args._one.split(":")
        print("RESULT " + json.dumps(_one(setting, args.steps, args.warmup, args.batch_size, bf16,
                                          args.max_seq_length)), flush=True)
        return 0

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    rows = []
    print(f"{'setting':<14}{'bf16':>6}{'thr':>5}{'s/step':>9}{'pairs/s':>9}{'trainable':>11}{'peak RSS':>10}", flush=True)
    for bf16 in args.bf16:
        for setting in args.settings:
            cmd = [sys.executable, __file__, "--_one", f"{setting}:{bf16}", "--steps", str(args.steps),
                   "--warmup", str(args.warmup), "--batch-size", str(args.batch_size),
                   "--max-seq-length", str(args.max_seq_length)]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if proc.returncode or line is None:
                print(f"{setting}: failed\n{proc.stderr[-2000:]}", flush=True)
                continue
            row = json.loads(line[len("RESULT "):])
            rows.append(row)
            print(f"{row['setting']:<14}{str(row['bf16']):>6}{row['threads']:>5}{row['seconds_per_step']:>9.2f}"
                  f"{row['pairs_per_s']:>9.1f}{row['trainable_params_M']:>10.1f}M{row['peak_rss_GB']:>8.2f}GB",
                  flush=True)
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
