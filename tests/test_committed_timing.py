"""The committed timing record backs what the README says about the default reproduce's cost."""
import json
from pathlib import Path

from hybrid_utils.profiles import DEFAULT_PROFILE

ROOT = Path(__file__).resolve().parents[1]


def test_the_default_reproduce_was_measured_from_scratch_within_half_an_hour_on_two_fp32_cores():
    invocations = json.loads((ROOT / "results" / "timing.json").read_text())["invocations"]
    from_scratch = [i for i in invocations if i.get("from_scratch") and not i["study"]
                    and i["profile"] == DEFAULT_PROFILE]
    assert from_scratch, "no default (non-study) reproduce measured from scratch in results/timing.json"
    fastest = min(from_scratch, key=lambda i: i["total_seconds"])
    machine = fastest["machine"]
    assert machine["cpu_count"] == 2 and not machine["native_bf16"] and not machine["cuda"]  # fp32, no AMX, no GPU
    assert fastest["total_seconds"] <= 1800
