#!/usr/bin/env python3
"""End to end: the demo replays the head of the shipped synthetic Mooncake trace through 2
engine-sims with random and kv-aware routing, then the oracle, and prints the table and the
trace figures (docs/demo.md, "Replaying a trace"). ~20 s.

    python3 tests/demo/demo_trace_test.py BUILD_DIR
"""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(build_dir):
    argv = [sys.executable, os.path.join(ROOT, "tools/demo/run_demo.py"),
            "--build-dir", build_dir, "--algorithms", "random,kv-aware",
            "--trace", os.path.join(ROOT, "tools/loadgen/traces/synthetic_mooncake.jsonl"),
            "--trace-format", "mooncake", "--trace-speedup", "10", "--num-requests", "16",
            "--trace-max-output-tokens", "32", "--pods", "2", "--blocks-per-pod", "4096",
            "--max-model-len", "32768", "--time-scale", "20", "--overhead-probes", "0"]
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=300)
    out = p.stdout
    failures = []

    def check(cond, what):
        if not cond:
            failures.append(what)

    check(p.returncode == 0, f"exit code {p.returncode}")
    check("synthetic_mooncake.jsonl (mooncake)" in out, "workload line names the trace")
    rows = {}
    for line in out.splitlines():
        m = re.match(r"(random|kv-aware|oracle)\s+(\d+\.\d)%\s+(\d+)ms\s+(\d+)ms\s+(\d+)ms"
                     r"\s+[\d.]+\s+\d+\s+(\d+)\s+(\d+)ms\s+(\d+)ms", line)
        if m:
            rows[m.group(1)] = (float(m.group(2)), float(m.group(4)))
            check(m.group(6) == "0", f"{m.group(1)}: {m.group(6)} failed requests")
            # The engines' queue and prefill means (real ms): every prompt is prefilled.
            check(int(m.group(8)) > 0, f"{m.group(1)}: prefill mean {m.group(8)} ms")
    check(set(rows) == {"random", "kv-aware", "oracle"}, f"table rows {sorted(rows)}")
    best = re.search(r"^best algorithm by TTFT p90: (random|kv-aware)$", out, re.M)
    check(best is not None, "best algorithm line")
    hit = re.search(r"^figure best_hit_rate_vs_oracle (\d+\.\d+) ratio$", out, re.M)
    ttft = re.search(r"^figure best_ttft_p90_over_oracle (\d+\.\d+) x$", out, re.M)
    check(hit is not None and ttft is not None, "both trace figure lines")
    if best and hit and ttft and len(rows) == 3:
        b = best.group(1)
        # The best is the lower TTFT p90, and the figures are its ratios to the oracle.
        other = "random" if b == "kv-aware" else "kv-aware"
        check(rows[b][1] <= rows[other][1], f"best {b} has the lower TTFT p90 {rows}")
        check(abs(float(hit.group(1)) - rows[b][0] / rows["oracle"][0]) < 0.01,
              f"hit ratio {hit.group(1)} vs {rows}")
        # The shared documents and conversations make the oracle's cache hit most tokens.
        check(rows["oracle"][0] > 50, f"oracle hit rate {rows['oracle'][0]}")
    if failures:
        print(out)
        print("FAILED: " + "; ".join(failures))
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "build"))
