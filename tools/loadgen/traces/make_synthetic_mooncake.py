#!/usr/bin/env python3
"""Writes a small synthetic multi-turn long-context trace in the Mooncake format.

Each line is {"timestamp": ms, "input_length": N, "output_length": M, "hash_ids": [...]},
one hash id per `--block-tokens` block (docs/loadgen.md). The shape follows the published
Mooncake conversation trace: conversations of several turns, each turn's prompt is the
previous prompt (its full blocks) plus the previous reply and a new user message, and many
conversations start from one of a few long shared documents. Deterministic for a seed:

    python3 tools/loadgen/traces/make_synthetic_mooncake.py > tools/loadgen/traces/synthetic_mooncake.jsonl
"""
import argparse
import json
import random
import sys


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--block-tokens", type=int, default=512)
    ap.add_argument("--documents", type=int, default=8, help="shared long prefixes")
    ap.add_argument("--doc-blocks", default="8,48", help="blocks per document, min,max")
    ap.add_argument("--conversations", type=int, default=64)
    ap.add_argument("--turns", default="2,8", help="turns per conversation, min,max")
    ap.add_argument("--user-tokens", default="64,1536", help="new user tokens per turn, min,max")
    ap.add_argument("--output-tokens", default="32,256", help="reply tokens per turn, min,max")
    ap.add_argument("--span-s", type=float, default=240, help="conversation starts spread over")
    ap.add_argument("--think-s", type=float, default=10, help="mean gap between turns")
    ap.add_argument("--max-lines", type=int, default=320)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    bt = args.block_tokens

    def pair(s):
        lo, hi = (int(x) for x in s.split(","))
        return lo, hi

    next_id = 0

    def new_ids(n):
        nonlocal next_id
        ids = list(range(next_id, next_id + n))
        next_id += n
        return ids

    lo, hi = pair(args.doc_blocks)
    docs = [new_ids(rng.randint(lo, hi)) for _ in range(args.documents)]
    # Popularity of the documents: Zipf-like, so a few are hot.
    weights = [1.0 / (i + 1) for i in range(args.documents)]
    lines = []
    for _ in range(args.conversations):
        doc = rng.choices(range(args.documents), weights)[0]
        ids = list(docs[doc])
        length = len(ids) * bt
        t = rng.uniform(0, args.span_s)
        for turn in range(rng.randint(*pair(args.turns))):
            length += rng.randint(*pair(args.user_tokens))
            full = len(ids) if turn == 0 else ids_full
            ids = ids[:full] + new_ids(-(-length // bt) - full)
            out = rng.randint(*pair(args.output_tokens))
            lines.append({"timestamp": round(t * 1000), "input_length": length,
                          "output_length": out, "hash_ids": ids})
            # The next turn keeps this prompt's full blocks; the partial last block and the
            # reply change, so they get new ids.
            ids_full = length // bt
            length += out
            t += rng.expovariate(1.0 / args.think_s)
    lines.sort(key=lambda l: l["timestamp"])
    for l in lines[: args.max_lines]:
        sys.stdout.write(json.dumps(l, separators=(", ", ": ")) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
