#!/usr/bin/env python3
"""Checks the deployment files against each other and against the built binary (no cluster,
no Docker needed). Run by ctest as deploy_manifests_test:

    python3 scripts/check-deploy.py --binary build/bin/aibrix-cache

* every YAML file under deploy/ parses (python3-yaml), and the kustomization lists files
  that exist;
* the aibrix-cache Deployment: probes on /healthz (liveness) and /readyz (readiness),
  requests and limits, non-root, read-only root filesystem, no privilege escalation, runs
  `--discovery kubernetes`, uses the ServiceAccount the ClusterRoleBinding binds; every flag
  it passes is one `aibrix-cache --help` lists; the Service targets its port;
* the ClusterRole grants exactly list and watch on pods and modeladapters.model.aibrix.ai;
* the vLLM example: the labels the Store reads and a --kv-events-config whose ports and block
  size agree with them and with aibrix-cache's settings;
* the Dockerfile: Debian 12 stages, the build stage runs scripts/install-deps.sh, a non-root
  user, and a runtime package list equal to the packages that own the shared libraries the
  binary links directly (readelf NEEDED, ldd, dpkg -S): nothing missing, nothing extra.

Exits 1 with one line per problem.
"""

import argparse
import json
import os
import re
import subprocess
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.join(ROOT, "deploy", "kubernetes")
problems = []


def fail(msg):
    problems.append(msg)


def load_all(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def flag_names(args):
    return [a.split("=", 1)[0] for a in args if a.startswith("--")]


def check_yaml():
    docs = {}
    for dirpath, _, files in os.walk(os.path.join(ROOT, "deploy")):
        for name in sorted(files):
            if not name.endswith((".yaml", ".yml")):
                continue
            path = os.path.join(dirpath, name)
            try:
                docs[os.path.relpath(path, DEPLOY)] = load_all(path)
            except yaml.YAMLError as e:
                fail(f"{path}: {e}")
    return docs


def by_kind(docs, kind):
    return [d for ds in docs.values() for d in ds if d.get("kind") == kind]


def check_kustomization(docs):
    kust = docs.get("kustomization.yaml")
    if not kust:
        fail("deploy/kubernetes/kustomization.yaml missing")
        return
    for res in kust[0].get("resources", []):
        if not os.path.exists(os.path.join(DEPLOY, res)):
            fail(f"kustomization lists {res}, which does not exist")


def check_rbac(docs):
    roles = by_kind(docs, "ClusterRole")
    if len(roles) != 1:
        fail(f"want one ClusterRole, found {len(roles)}")
        return
    granted = set()
    for rule in roles[0].get("rules", []):
        for group in rule.get("apiGroups", []):
            for res in rule.get("resources", []):
                for verb in rule.get("verbs", []):
                    granted.add((group, res, verb))
    want = {(g, r, v) for g, r in (("", "pods"), ("model.aibrix.ai", "modeladapters"))
            for v in ("list", "watch")}
    if granted != want:
        fail(f"ClusterRole grants {sorted(granted)}; want exactly {sorted(want)}")
    bindings = by_kind(docs, "ClusterRoleBinding")
    if len(bindings) != 1 or bindings[0]["roleRef"]["name"] != roles[0]["metadata"]["name"]:
        fail("the ClusterRoleBinding must bind the ClusterRole")
        return []
    return [(s.get("namespace"), s.get("name")) for s in bindings[0].get("subjects", [])
            if s.get("kind") == "ServiceAccount"]


def aibrix_container(docs):
    for d in by_kind(docs, "Deployment"):
        for c in d["spec"]["template"]["spec"]["containers"]:
            if c["name"] == "aibrix-cache":
                return d, c
    fail("no Deployment with an aibrix-cache container")
    return None, None


def check_deployment(docs, help_text):
    deployment, c = aibrix_container(docs)
    if not c:
        return
    pod = deployment["spec"]["template"]["spec"]
    ns = deployment["metadata"].get("namespace")
    subjects = check_rbac(docs) or []
    if (ns, pod.get("serviceAccountName")) not in subjects:
        fail(f"serviceAccountName {pod.get('serviceAccountName')} in {ns} is not bound to the "
             f"ClusterRole (subjects {subjects})")
    if not any(sa["metadata"]["name"] == pod.get("serviceAccountName")
               for sa in by_kind(docs, "ServiceAccount")):
        fail("the Deployment's ServiceAccount is not defined")
    if c.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/healthz":
        fail("livenessProbe must GET /healthz")
    if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/readyz":
        fail("readinessProbe must GET /readyz")
    res = c.get("resources", {})
    for part in ("requests", "limits"):
        for what in ("cpu", "memory"):
            if what not in res.get(part, {}):
                fail(f"resources.{part}.{what} missing")
    sc = {**pod.get("securityContext", {}), **c.get("securityContext", {})}
    if sc.get("runAsNonRoot") is not True:
        fail("runAsNonRoot must be true")
    if c.get("securityContext", {}).get("readOnlyRootFilesystem") is not True:
        fail("readOnlyRootFilesystem must be true")
    if c.get("securityContext", {}).get("allowPrivilegeEscalation") is not False:
        fail("allowPrivilegeEscalation must be false")
    args = c.get("args", [])
    if "--discovery=kubernetes" not in args and not any(
            a == "--discovery" and b == "kubernetes" for a, b in zip(args, args[1:])):
        fail("the Deployment must run --discovery kubernetes")
    if help_text is not None:
        known = set(re.findall(r"(?<![\w-])(--[a-z0-9][a-z0-9-]*)", help_text))
        for flag in flag_names(args):
            if flag not in known:
                fail(f"the Deployment passes {flag}, which aibrix-cache --help does not list")
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    http_addr = next((a.split("=", 1)[1] for a in args if a.startswith("--http-addr=")), "")
    if not http_addr.endswith(f":{ports.get('http')}"):
        fail(f"--http-addr {http_addr} does not listen on the container port {ports}")
    for svc in by_kind(docs, "Service"):
        if svc["metadata"]["name"] != "aibrix-cache":
            continue
        if svc["spec"]["selector"].items() - deployment["spec"]["template"]["metadata"][
                "labels"].items():
            fail("the Service selector does not select the Deployment's pods")
        for p in svc["spec"]["ports"]:
            if p["targetPort"] not in ports and p["targetPort"] not in ports.values():
                fail(f"Service targetPort {p['targetPort']} is not a container port")
    return {e["name"]: e.get("value") for e in c.get("env", [])}


def check_vllm_example(docs, service_env):
    examples = [(path, d) for path, ds in docs.items() if path.startswith("examples")
                for d in ds if d.get("kind") == "Deployment"]
    if not examples:
        fail("no example vLLM Deployment under deploy/kubernetes/examples")
    for path, d in examples:
        labels = d["spec"]["template"]["metadata"]["labels"]
        if d["spec"]["selector"]["matchLabels"].items() - labels.items():
            fail(f"{path}: selector does not match the pod labels")
        if not labels.get("model.aibrix.ai/name"):
            fail(f"{path}: pods need the model.aibrix.ai/name label")
        if labels.get("model.aibrix.ai/kv-events-enabled") != "true":
            fail(f"{path}: pods need model.aibrix.ai/kv-events-enabled: \"true\"")
        c = d["spec"]["template"]["spec"]["containers"][0]
        args = c.get("args", [])
        conf = [a.split("=", 1)[1] for a in args if a.startswith("--kv-events-config=")]
        if len(conf) != 1:
            fail(f"{path}: one --kv-events-config=JSON argument expected")
            continue
        kv = json.loads(conf[0])
        if kv.get("enable_kv_cache_events") is not True or kv.get("publisher") != "zmq":
            fail(f"{path}: --kv-events-config must enable events with the zmq publisher")
        container_ports = {p["containerPort"] for p in c.get("ports", [])}
        for key, label, default in (("endpoint", "model.aibrix.ai/kv-events-port", 5557),
                                    ("replay_endpoint", "model.aibrix.ai/kv-events-replay-port",
                                     5558)):
            endpoint = kv.get(key, "")
            if not endpoint.startswith("tcp://*:"):
                fail(f"{path}: {key} must bind tcp://*:PORT (the engine listens)")
                continue
            port = int(endpoint.rsplit(":", 1)[1])
            if port != int(labels.get(label, default)):
                fail(f"{path}: {key} port {port} is not what {label} tells aibrix-cache")
            if port not in container_ports:
                fail(f"{path}: {key} port {port} is not a container port")
        serving = int(labels.get("model.aibrix.ai/port", 8000))
        if f"--port={serving}" not in args:
            fail(f"{path}: vLLM must serve on model.aibrix.ai/port {serving}")
        block = [a.split("=", 1)[1] for a in args if a.startswith("--block-size=")]
        want = service_env.get("AIBRIX_PREFIX_CACHE_BLOCK_SIZE", "16")
        if block != [want]:
            fail(f"{path}: --block-size {block} differs from aibrix-cache's block size {want}")


def runtime_packages_needed(binary):
    """Debian packages owning the shared libraries `binary` links directly (DT_NEEDED; apt
    brings what those need), minus what every debian:12-slim image has; None for a sanitizer
    build, whose link set (other optimisation, inlining) is not the image's Release build's."""
    dynamic = subprocess.run(["readelf", "-d", binary], capture_output=True, text=True,
                             check=True).stdout
    needed = set(re.findall(r"\(NEEDED\)\s+Shared library: \[([^]]+)\]", dynamic))
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    libs = [path for name, path in re.findall(r"^\s*(\S+)\s+=>\s+(\S+)\s+\(", out, re.M)
            if name in needed]
    if any(re.search(r"lib(a|ub|t|l)san", lib) for lib in libs):
        return None
    packages = set()
    for lib in libs:
        real = os.path.realpath(lib)
        for candidate in (lib, real, real.replace("/usr/lib/", "/lib/"),
                          lib.replace("/lib/", "/usr/lib/")):
            r = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True)
            if r.returncode == 0:
                packages.add(r.stdout.split(":", 1)[0])
                break
        else:
            fail(f"no Debian package owns {lib} (ldd {binary})")
    # Present in every debian:12-slim image.
    return packages - {"libc6", "libgcc-s1", "libstdc++6", "zlib1g", "libzstd1", "liblzma5"}


def check_dockerfile(binary):
    path = os.path.join(ROOT, "Dockerfile")
    text = open(path).read()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    if froms != ["debian:12", "debian:12-slim"]:
        fail(f"Dockerfile stages {froms}; want debian:12 (build) then debian:12-slim (runtime)")
    if "bash /src/scripts/install-deps.sh" not in text:
        fail("the Dockerfile's build stage must install through scripts/install-deps.sh")
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    if not users or users[-1].split(":")[0] in ("0", "root"):
        fail("the runtime stage must run as a non-root USER")
    block = re.search(r"# runtime-packages-begin(.*)# runtime-packages-end", text, re.S)
    if not block:
        fail("Dockerfile: runtime package block markers missing")
        return
    listed = set(re.findall(r"^\s+([a-z0-9][a-z0-9.+-]+)\s*\\?$", block.group(1), re.M))
    listed.discard("ca-certificates")  # not a linked library: the remote tokenizer's TLS
    if binary:
        needed = runtime_packages_needed(binary)
        if needed is None:
            print("check-deploy: sanitizer build: the runtime package list is checked against "
                  "the normal build only")
            return
        for p in sorted(needed - listed):
            fail(f"Dockerfile runtime stage lacks {p} (the binary links a library from it)")
        for p in sorted(listed - needed):
            fail(f"Dockerfile runtime stage installs {p}, which the binary does not link")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--binary", help="build/bin/aibrix-cache (flags and libraries checks)")
    args = parser.parse_args()
    help_text = None
    if args.binary:
        help_text = subprocess.run([args.binary, "--help"], capture_output=True, text=True,
                                   env={**os.environ, "AIBRIX_HUGEPAGES": "0"}).stdout
    docs = check_yaml()
    check_kustomization(docs)
    env = check_deployment(docs, help_text) or {}
    check_vllm_example(docs, env)
    check_dockerfile(args.binary)
    for p in problems:
        print(f"check-deploy: {p}")
    print(f"check-deploy: {len(docs)} YAML files, {'ok' if not problems else 'FAILED'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
