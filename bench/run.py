#!/usr/bin/env python3
"""Benchmarks of what users wait for, on a real local cluster.

    bench/run.py [--runs N] [--calls N]

Starts the local etcd (scripts/demo.sh etcd), removes any local node, then
measures, each as the median of several runs:

- deploy: playbooks/site.yml from nothing to a leader and two streaming
  replicas, with when each node's task ended (the converge breakdown);
- re-run: site.yml again on the deployed nodes (must report changed=0);
- instance no-op, direct: the module binary on an arguments file, process
  start to exit, and its peak memory (ru_maxrss of the child);
- instance no-op through ansible-playbook (one task on one node);
- patroni info, direct;
- pgherd status, direct (process start to exit);
- switchover through the patroni module, until the old leader streams again
  (the module waits for it);
- module binary sizes.

Prints a Markdown table. Leaves the cluster deployed (scripts/demo.sh down
removes it). Not a test: nothing here asserts a time.
"""

import argparse
import calendar
import datetime
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = os.path.join(REPO, "ansible_collection/ansible_collections/pgherd/cluster/plugins/modules")
INVENTORY = os.path.join(REPO, "playbooks/inventories/local")
LOCAL = os.path.join(REPO, ".work/local")
PLAYBOOK = os.path.join(REPO, ".venv/bin/ansible-playbook")


def env():
    e = dict(os.environ)
    e["ANSIBLE_COLLECTIONS_PATH"] = os.path.join(REPO, "ansible_collection")
    e["ANSIBLE_CALLBACK_PLUGINS"] = os.path.join(REPO, "tests/ansible/callback_plugins")
    e["ANSIBLE_CALLBACKS_ENABLED"] = "pgherd_events"
    e["PGHERD_REPO"] = REPO
    return e


def playbook(path, *extra):
    """Runs a playbook; returns (seconds, events, start time)."""
    with tempfile.NamedTemporaryFile(suffix=".jsonl", delete=False) as f:
        events_file = f.name
    e = env()
    e["PGHERD_EVENTS_FILE"] = events_file
    start = time.time()
    if os.environ.get("BENCH_TRACE"):
        print(f"playbook {path} starts at {start:.2f}", flush=True)
    proc = subprocess.run([PLAYBOOK, "-i", INVENTORY, path, *extra], env=e,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seconds = time.time() - start
    with open(events_file) as f:
        events = [json.loads(line) for line in f if line.strip()]
    os.unlink(events_file)
    if proc.returncode != 0:
        failed = [ev for ev in events if ev["status"] == "failed"]
        sys.exit(f"{path} failed: {json.dumps(failed)[:2000]}\n{proc.stdout[-2000:]}")
    return seconds, events, start


def run_module(module, args, memory=False):
    """Runs a module binary on an arguments file: (seconds, peak KiB, result).
    With `memory`, runs it a second time under GNU time for its peak memory
    (only for calls that change nothing); otherwise the peak is None."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(args, f)
        path = f.name
    binary = os.path.join(MODULES, module)
    start = time.perf_counter()
    proc = subprocess.run([binary, path], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seconds = time.perf_counter() - start
    peak_kib = None
    if memory:
        # GNU time: the child of a fork from Python would count Python's
        # own pages before exec in its ru_maxrss.
        timed = subprocess.run(["/usr/bin/time", "-f", "%M", binary, path],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        peak_kib = int(timed.stderr.strip().splitlines()[-1])
    os.unlink(path)
    result = json.loads(proc.stdout)
    if result.get("failed"):
        sys.exit(f"{module} failed: {result.get('msg')}")
    return seconds, peak_kib, result


def node_args(n):
    host = f"127.0.0.1{n}"
    root = os.path.join(LOCAL, f"pg{n}")
    return {
        "name": "main", "version": "15", "port": 5432,
        "settings": os.path.join(root, "settings.yaml"),
        "surole_password": "local-superuser-pw",
        "replrole_password": "local-replication-pw",
        "rewind_password": "local-rewind-pw",
        # As site.yml gives it: the members, and 127.0.0.1 (local ones
        # connect from there; the filter pgherd_member_addresses).
        "member_addresses": ["127.0.0.11", "127.0.0.1", "127.0.0.12", "127.0.0.13"],
        "patroni": {
            "cluster": "pgherd-local", "node": f"pg{n}",
            "restapi": {"connect_address": f"{host}:8008", "listen": f"{host}:8008"},
            "postgresql": {"connect_host": host, "listen": host},
        },
    }


# Milestones of a deploy, read from the nodes' Patroni and PostgreSQL logs:
# (label, "patroni" or "postgresql", text of the first line that tells).
# For the leader, "PG started" follows initdb; "leader key" follows
# Patroni's post_bootstrap (roles made, leader key taken).
MILESTONES = [
    ("Patroni up", "patroni", "Selected new etcd server"),
    ("PG started", "postgresql", "starting PostgreSQL"),
    ("leader key", "patroni", "initialized a new cluster"),
    ("clone done", "patroni", "replica has been created"),
    ("slot missing", "postgresql", "could not start WAL streaming: ERROR:  replication slot"),
    ("streaming", "postgresql", "started streaming WAL"),
]


def log_time(line, kind):
    """Epoch seconds of a log line: Patroni writes local time with a comma
    before the milliseconds, PostgreSQL (log_line_prefix %m) UTC."""
    try:
        if kind == "patroni":
            t = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
            return time.mktime(t.timetuple()) + t.microsecond / 1e6
        t = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f")
        return calendar.timegm(t.timetuple()) + t.microsecond / 1e6
    except ValueError:
        return None


def milestones(node, start):
    """Seconds from `start` to each milestone found in a node's logs."""
    root = os.path.join(LOCAL, node, "log")
    files = {"patroni": glob.glob(os.path.join(root, "patroni-*", "patroni.log")),
             "postgresql": glob.glob(os.path.join(root, "postgresql-*", "*.log"))}
    found = {}
    for label, kind, text in MILESTONES:
        for path in files[kind]:
            with open(path, errors="replace") as f:
                for line in f:
                    if text in line:
                        t = log_time(line, kind)
                        if t is not None and t >= start - 1:
                            found.setdefault(label, t - start)
                            break
    return found


def median_ms(values):
    return statistics.median(values) * 1000


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="deploys and switchovers")
    parser.add_argument("--calls", type=int, default=20, help="module calls")
    parser.add_argument("--only", choices=["deploy"],
                        help="only deploy and re-run (with the breakdown)")
    a = parser.parse_args()

    subprocess.run([os.path.join(REPO, "scripts/build-collection.sh")], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run([os.path.join(REPO, "scripts/demo.sh"), "etcd"], check=True,
                   stdout=subprocess.DEVNULL)
    teardown = os.path.join(REPO, "playbooks/teardown.yml")
    site = os.path.join(REPO, "playbooks/site.yml")

    # The settings file site.yml writes; for the first teardown, a copy of
    # the inventory's settings is enough to reach etcd.
    info_args = {"cluster": "pgherd-local", "state": "info",
                 "settings": {"patroni": {"etcd": {"hosts": ["127.0.0.1:2379"]}}}}
    rows = []
    deploys, reruns, breakdowns = [], [], []
    def from_nothing():
        # teardown.yml leaves the DCS alone: remove the cluster from it with
        # the patroni module, guarded by its system identifier.
        sysid = subprocess.run(
            ["etcdctl", "--endpoints=http://127.0.0.1:2379", "get",
             "/service/pgherd-local/initialize", "--print-value-only"],
            stdout=subprocess.PIPE, text=True, check=True).stdout.strip()
        playbook(teardown)
        if sysid:
            run_module("patroni", dict(info_args, state="absent", system_identifier=sysid))

    for _ in range(a.runs):
        from_nothing()
        seconds, events, start = playbook(site)
        deploys.append(seconds)
        ends = {ev["host"]: ev["end"] - start for ev in events
                if ev["action"] == "pgherd.cluster.instance"}
        marks = {n: milestones(n, start) for n in ends}
        breakdowns.append((ends, marks))
        seconds, events, _ = playbook(site)
        changed = [ev for ev in events if ev["result"].get("changed")]
        if changed:
            sys.exit(f"the re-run changed something: {changed}")
        reruns.append(seconds)
    rows.append(("3-node deploy, site.yml (etcd running)", f"{statistics.median(deploys):.2f} s",
                 "≤ 8 s", ", ".join(f"{d:.2f}" for d in deploys)))
    rows.append(("idempotent re-run, site.yml, changed=0", f"{statistics.median(reruns):.2f} s",
                 "≤ 2 s", ", ".join(f"{d:.2f}" for d in reruns)))
    if a.only == "deploy":
        report(rows, breakdowns)
        return

    times, peaks = [], []
    for _ in range(a.calls):
        s, peak, result = run_module("instance", node_args(1), memory=True)
        if result.get("changed"):
            sys.exit(f"the no-op changed something: {result.get('changes')}")
        times.append(s)
        peaks.append(peak)
    rows.append(("instance no-op, direct", f"{median_ms(times):.1f} ms", "≤ 5 ms",
                 f"min {min(times) * 1000:.1f}, max {max(times) * 1000:.1f} ms"))
    rows.append(("instance no-op, direct: peak memory", f"{max(peaks) / 1024:.1f} MB", "≤ 6 MB",
                 f"median {statistics.median(peaks) / 1024:.1f} MB"))

    via = []
    noop = os.path.join(REPO, "bench/instance_noop.yml")
    for _ in range(max(3, a.calls // 4)):
        s, _, _ = playbook(noop)
        via.append(s)
    rows.append(("instance no-op, ansible-playbook (one task)", f"{statistics.median(via):.2f} s",
                 "", ", ".join(f"{d:.2f}" for d in via)))

    times, peaks = [], []
    for _ in range(a.calls):
        s, peak, _ = run_module("patroni", info_args, memory=True)
        times.append(s)
        peaks.append(peak)
    rows.append(("patroni info, direct", f"{median_ms(times):.1f} ms", "≤ 30 ms",
                 f"peak {max(peaks) / 1024:.1f} MB"))

    # The CLI reads the cluster the way the module's info does, from the
    # settings file the instance task keeps on the node.
    pgherd = os.path.join(REPO, "target/bin/pgherd")
    status = [pgherd, "status", "-s", os.path.join(LOCAL, "pg1/settings.yaml"),
              "-c", "pgherd-local"]
    times = []
    for _ in range(a.calls):
        start = time.perf_counter()
        subprocess.run(status, stdout=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - start)
    rows.append(("pgherd status, direct", f"{median_ms(times):.1f} ms", "≤ 5 ms",
                 f"min {min(times) * 1000:.1f}, max {max(times) * 1000:.1f} ms"))

    switches = []
    for i in range(a.runs):
        _, _, info = run_module("patroni", info_args)
        leader = info["cluster"]["leader"]
        target = next(m["name"] for m in info["cluster"]["members"] if m["name"] != leader)
        s, _, result = run_module("patroni", dict(info_args, state="present", leader=target))
        if not result.get("changed"):
            sys.exit(f"the switchover to {target} did nothing: {result}")
        switches.append(s)
    rows.append(("switchover until the old leader streams", f"{statistics.median(switches):.2f} s",
                 "≤ 4 s", ", ".join(f"{d:.2f}" for d in switches)))

    bins = os.path.join(os.path.dirname(os.path.dirname(MODULES)), "bin")
    for arch in ("x86_64", "aarch64"):
        for module in ("instance", "patroni", "etcd", "pgherd"):
            size = os.path.getsize(os.path.join(bins, arch, module))
            rows.append((f"{module} binary, {arch} (static, stripped)", f"{size / 1e6:.2f} MB",
                         "≤ 4 MB", ""))

    report(rows, breakdowns)


def report(rows, breakdowns):
    print("| measure | median | target | runs |")
    print("|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print()
    print("Converge breakdown, seconds from ansible-playbook start (median of the runs; "
          "task = the node's instance task ended):")
    print()
    print("| node | " + " | ".join(label for label, *_ in MILESTONES) + " | task |")
    print("|---|" + "---|" * (len(MILESTONES) + 1))
    for role in ("leader", "replicas"):
        cells = []
        for label in [label for label, *_ in MILESTONES] + ["task"]:
            values = [(ends[n] if label == "task" else marks[n].get(label))
                      for ends, marks in breakdowns for n in ends
                      if is_replica(marks[n]) == (role == "replicas")]
            values = [v for v in values if v is not None]
            cells.append(f"{statistics.median(values):.2f}" if values else "")
        print(f"| {role} | " + " | ".join(cells) + " |")
    replicas = [m for _, marks in breakdowns for m in marks.values() if is_replica(m)]
    missing = sum(1 for m in replicas if "slot missing" in m)
    print(f"Replicas that asked for their slot before the leader had it: {missing} of {len(replicas)}")


def is_replica(marks):
    """A node that was cloned (the leader's log also tells of missing slots:
    it refuses the replicas' requests)."""
    return "clone done" in marks

if __name__ == "__main__":
    main()
