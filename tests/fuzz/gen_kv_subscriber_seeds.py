#!/usr/bin/env python3
"""Writes the seed scripts of kvevents_subscriber_fuzz (tests/kvevents/subscriber_fuzz.cc)
into tests/fuzz/corpus/kv_subscriber. Each seed is a script of engine actions: an op byte,
then its operands; a chunk is a little-endian 16-bit length and its bytes. Payloads come from
the wire vectors in tests/testdata/kv. Run from anywhere: python3 tests/fuzz/gen_kv_subscriber_seeds.py
"""
import pathlib
import struct

ROOT = pathlib.Path(__file__).resolve().parents[2]
VECTORS = ROOT / "tests" / "testdata" / "kv"
OUT = ROOT / "tests" / "fuzz" / "corpus" / "kv_subscriber"

LIVE, MALFORMED, PAYLOAD, DECODED, DROP, RESTART, CHAIN = range(7)


def chunk(data: bytes) -> bytes:
    return struct.pack("<H", len(data)) + data


def vector(name: str) -> bytes:
    return bytes.fromhex((VECTORS / f"{name}.hex").read_text().strip())


def chain(blocks: int, parent: int, start: int) -> bytes:
    return bytes([CHAIN, blocks - 1, parent, start])


SEEDS = {
    "empty": b"",
    "chains": chain(4, 0, 1) + chain(8, 0, 2) + chain(2, 0, 3),
    "gap_replayed": chain(4, 0, 1) + bytes([DROP, 1]) + chain(3, 0, 2) + chain(1, 0, 3),
    "restart": chain(4, 0, 1) + bytes([RESTART]) + chain(2, 0, 2),
    "live_ahead": bytes([LIVE, 5]) + chunk(vector("m1_map_block_stored")) + chain(2, 0, 1),
    "live_behind": chain(3, 0, 1) + bytes([LIVE, 0xFE]) + chunk(vector("m1_map_block_removed")),
    "malformed": bytes([MALFORMED, 0, MALFORMED, 1, MALFORMED, 2]) + chunk(b"\x91")
    + bytes([MALFORMED, 3]),
    "payload_garbage": bytes([PAYLOAD]) + chunk(b"\x93\xcb\x00\x00\x00\x00\x00\x00\xf0\x3f\x91\xc0"),
    "decoded_multi": bytes([DECODED]) + chunk(vector("m1_map_multi_event_batch"))
    + bytes([DECODED]) + chunk(vector("m1_map_all_cleared")),
}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, data in SEEDS.items():
        (OUT / name).write_bytes(data)


if __name__ == "__main__":
    main()
