#!/usr/bin/env python3
"""Writes the extproc_fuzz seed corpus (tests/fuzz/corpus/extproc): Envoy message sequences
written as text protos, encoded by protoc with Envoy's API protos (third_party/grpc-js-xds,
fetched by scripts/install-deps.sh), each prefixed by its 2-byte little-endian length, after
one option byte (bit 0: GIE dialect, bit 1: default strategy, bit 2: bearer token)."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROTOS = os.path.join(ROOT, "third_party", "grpc-js-xds")
OUT = os.path.join(ROOT, "tests", "fuzz", "corpus", "extproc")


def encode(text):
    return subprocess.run(
        ["protoc", f"-I{PROTOS}/envoy-api", f"-I{PROTOS}/xds", f"-I{PROTOS}/protoc-gen-validate",
         "-I/usr/include", "--encode=envoy.service.ext_proc.v3.ProcessingRequest",
         "envoy/service/ext_proc/v3/external_processor.proto"],
        input=text.encode(), capture_output=True, check=True).stdout


def headers(pairs, eos=False, kind="request_headers"):
    items = " ".join(f'headers {{ key: "{k}" raw_value: "{v}" }}' for k, v in pairs)
    return f"{kind} {{ headers {{ {items} }} end_of_stream: {str(eos).lower()} }}"


def body(data, eos=True, kind="request_body"):
    escaped = data.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'{kind} {{ body: "{escaped}" end_of_stream: {str(eos).lower()} }}'


REQ = [(":path", "/v1/completions"), (":method", "POST"), ("content-type", "application/json")]
ROUTED = REQ + [("routing-strategy", "least-request")]
BODY = '{"model":"llama","prompt":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17],"stream":true}'
CHAT = '{"model":"llama","messages":[{"role":"user","content":"hello"}]}'
SSE = 'data: {"choices":[]}\n\ndata: {"usage":{"completion_tokens":7}}\n\ndata: [DONE]\n\n'
SUBSET = ('metadata_context { filter_metadata { key: "envoy.lb.subset_hint" value { fields { '
          'key: "x-gateway-destination-endpoint-subset" value { list_value { values { '
          'string_value: "127.0.0.1:10" } } } } } } }')

SEEDS = {
    "routed": (0, [headers(ROUTED), body(BODY), headers([(":status", "200")], kind="response_headers"),
                   body(SSE[:20], False, "response_body"), body(SSE[20:], True, "response_body")]),
    "by_model": (0, [headers(REQ), body(CHAT), headers([(":status", "200")], True, "response_headers")]),
    "default_strategy": (2, [headers(REQ), body(BODY), headers([(":status", "500")], kind="response_headers"),
                             body("", True, "response_body")]),
    "gie_subset": (1, [headers(REQ) + " " + SUBSET, body(BODY),
                       headers([(":status", "200")], kind="response_headers"),
                       body(SSE, True, "response_body")]),
    "auth": (4, [headers(ROUTED + [("authorization", "Bearer token")]), body(BODY)]),
    "out_of_order": (0, [body(BODY), headers(ROUTED), body(BODY), body(BODY)]),
    "trailers": (0, [headers(ROUTED), body(BODY, False), "request_trailers { }",
                     headers([(":status", "200")], kind="response_headers"), "response_trailers { }"]),
}

os.makedirs(OUT, exist_ok=True)
for name, (option, messages) in SEEDS.items():
    data = bytes([option])
    for text in messages:
        encoded = encode(text)
        data += len(encoded).to_bytes(2, "little") + encoded
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
print(f"wrote {len(SEEDS)} seeds to {OUT}", file=sys.stderr)
