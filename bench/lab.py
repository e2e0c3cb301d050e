#!/usr/bin/env python3
"""Benchmarks on the lab's hosts (scripts/lab.sh), over SSH with become.

    bench/lab.py [--runs N] [--bootstrap | --clients]

For each run: the lab booted fresh from the cached image (not timed), then

- deploy: playbooks/site.yml from nothing on booted hosts, until a leader
  and two streaming replicas (the playbook waits for them);
- re-run: site.yml again (must report changed=0);
- switchover: the patroni module from the leader to a replica, until the
  old leader streams again (the module waits for it);
- partition to writes: the leader's host cut off from its peers, until a
  new leader accepts a write through libpq's multi-host connection string;
- remove a replica: once the cluster is whole again, site.yml limited to a
  replica with pg_state=absent, until no member lists it.

With --clients, the cluster deployed (PostgreSQL on every address),
HAProxy on lab1 and PgBouncer on lab3 (the haproxy and pgbouncer roles),
the VIP 10.231.0.100 on every member (the vip role), and four clients
each inserting a row at a time: through HAProxy's read-write port,
PgBouncer, the VIP, and libpq's host list:

- the longest time without an acknowledged write through each during a
  switchover (the patroni module, lab1 to lab2), then after the leader's
  host is cut off from its peers (until writes are acknowledged again);
- VIP moved: from the leader key's new value (an etcd watch from this
  machine) to the first ARP reply for the VIP from the new leader's host
  (arping from this machine every 100 ms: the figure is within 100 ms).

With --bootstrap, the hosts boot with only the OS (`lab.sh up --bare`,
apt through the lab's proxy) and an inventory like the example's (TLS
everywhere, etcd authentication) is made from the lab's, then

- bare to running: playbooks/bootstrap.yml, until the cluster runs;
- re-run: the bootstrap again (must report changed=0);
- CA rotation: the bootstrap with pki_ca_rotation=begin, sign, finish.

Prints a Markdown table of medians (min-max). Takes the lab down at the
end. Not a test: nothing here asserts a time.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

from local import Writer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INVENTORY = os.path.join(REPO, "playbooks/inventories/lab")
PLAYBOOK = os.path.join(REPO, ".venv/bin/ansible-playbook")
LAB = os.path.join(REPO, "scripts/lab.sh")
PSQL = "/usr/lib/postgresql/15/bin/psql"
ALL = "host=10.231.0.11,10.231.0.12,10.231.0.13"


def env():
    e = dict(os.environ)
    e["ANSIBLE_COLLECTIONS_PATH"] = os.path.join(REPO, "ansible_collection")
    return e


def lab(*args):
    subprocess.run(["bash", LAB, *args], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def playbook(*args, inventory=INVENTORY):
    start = time.monotonic()
    out = subprocess.run([PLAYBOOK, "-i", inventory, *args], env=env(), capture_output=True, text=True)
    took = time.monotonic() - start
    if out.returncode != 0:
        sys.exit(f"bench: ansible-playbook {' '.join(args)} failed:\n{out.stdout[-3000:]}")
    return took, out.stdout


def one_task(host, args):
    path = os.path.join("/tmp", f"pgherd-bench-lab-{os.getpid()}.yml")
    with open(path, "w") as f:
        f.write(json.dumps([{"hosts": host, "gather_facts": False, "tasks": [
            {"name": "patroni", "pgherd.cluster.patroni": args}]}]))
    try:
        return playbook(path)
    finally:
        os.remove(path)


def write(target=ALL, port=5432):
    conninfo = (f"{target} port={port} user=postgres dbname=postgres connect_timeout=1 "
                "target_session_attrs=read-write")
    r = subprocess.run(["timeout", "3", PSQL, "-X", "-q", conninfo, "-c",
                        "INSERT INTO bench_writes VALUES (now())"],
                       env=dict(os.environ, PGPASSWORD="lab-superuser-pw"), capture_output=True)
    return r.returncode == 0


def leader_of(view):
    for m in view.get("members", []):
        if m.get("role") == "leader" and m.get("state") == "running":
            return m["name"]
    return None


def cluster_from(addr):
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://{addr}:8008/cluster", timeout=1) as r:
            return json.loads(r.read())
    except Exception:
        return {}


def one_run():
    lab("down")
    lab("up")
    site = os.path.join(REPO, "playbooks/site.yml")
    deploy, _ = playbook(site)
    rerun, out = playbook(site)
    if "changed=0" not in out or "changed=1" in out:
        sys.exit(f"bench: the re-run changed something:\n{out[-2000:]}")
    settings = "/etc/pgherd/settings.yaml"
    switch, _ = one_task("lab1", {"cluster": "lab", "settings": settings, "leader": "lab2"})
    subprocess.run([PSQL, "-X", "-q", f"{ALL} port=5432 user=postgres dbname=postgres "
                    "target_session_attrs=read-write", "-c", "CREATE TABLE bench_writes (t timestamptz)"],
                   env=dict(os.environ, PGPASSWORD="lab-superuser-pw"), check=True, capture_output=True)
    leader = leader_of(cluster_from("10.231.0.11")) or "lab2"
    cut = time.monotonic()
    lab("partition", leader)
    while True:
        if write():
            view = cluster_from("10.231.0.13" if leader != "lab3" else "10.231.0.11")
            if leader_of(view) not in (None, leader):
                break
        if time.monotonic() - cut > 120:
            sys.exit("bench: no new leader accepted writes within 120 s")
        time.sleep(0.05)
    to_writes = time.monotonic() - cut
    lab("heal", leader)
    # The cut-off leader back as a replica, then a replica removed, until
    # no member lists it (the instance task waits for that).
    deadline = time.monotonic() + 180
    while True:
        view = cluster_from("10.231.0.11")
        streaming = [m["name"] for m in view.get("members", [])
                     if m.get("role") == "replica" and m.get("state") == "streaming"]
        if leader_of(view) and len(streaming) == 2:
            break
        if time.monotonic() > deadline:
            sys.exit(f"bench: the cluster not whole again within 180 s of the heal: {view}")
        time.sleep(0.2)
    remove, _ = playbook(site, "-l", streaming[0], "-e", "pg_state=absent")
    return {"deploy": deploy, "re-run": rerun, "switchover": switch, "partition to writes": to_writes,
            "remove a replica (site.yml -e pg_state=absent)": remove}


VIP = "10.231.0.100"
ROLES = """
- hosts: lab1
  gather_facts: false
  roles: [pgherd.cluster.haproxy]
- hosts: lab3
  gather_facts: false
  roles:
    - role: pgherd.cluster.pgbouncer
      pgbouncer_users: [{name: postgres, password: lab-superuser-pw}]
- hosts: primary:replica
  gather_facts: false
  roles:
    - role: pgherd.cluster.vip
      vip_address: %s/24
""" % VIP


class Lines(threading.Thread):
    """A command's output lines, each with the time it came."""

    def __init__(self, argv):
        super().__init__(daemon=True)
        self.proc = subprocess.Popen(["stdbuf", "-oL", *argv], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        self.lines = []
        self.start()

    def run(self):
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line.strip()))

    def stop(self):
        self.proc.kill()


def leader_values(watch):
    """(time, value) of each PUT of the leader key in `etcdctl watch`'s lines."""
    out, lines = [], watch.lines[:]
    for i, (_, line) in enumerate(lines):
        if line == "PUT" and i + 2 < len(lines):
            out.append((lines[i + 2][0], lines[i + 2][1]))
    return out


def arp_replies(arpings):
    """(time, hardware address) of each reply in the arpings' lines, in order."""
    return sorted((t, line.split("[", 1)[1].split("]", 1)[0].lower())
                  for a in arpings for t, line in a.lines if "reply from" in line and "[" in line)


def vip_moved(watch, arpings, since, leader, mac):
    """From `leader`'s PUT of the leader key after `since` to the first ARP
    reply from its host's `mac` after that."""
    put = next((t for t, v in leader_values(watch) if t >= since and v == leader), None)
    if put is None:
        sys.exit(f"bench: no PUT of the leader key for {leader} seen")
    reply = next((t for t, m in arp_replies(arpings) if t >= put and m == mac), None)
    if reply is None:
        sys.exit(f"bench: no ARP reply for the VIP from {leader}'s host after its election")
    return reply - put


def clients_run():
    import tempfile
    lab("down")
    lab("up")
    playbook(os.path.join(REPO, "playbooks/site.yml"), "-e", "pg_listen=*")
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        f.write(ROLES)
    try:
        playbook(f.name)
    finally:
        os.remove(f.name)
    macs = {h: subprocess.run(["bash", LAB, "ssh", h, "cat /sys/class/net/host0/address"],
                              capture_output=True, text=True, check=True).stdout.strip().lower()
            for h in ("lab1", "lab2", "lab3")}
    # Not through lab2's etcd member: lab2 is cut off below, and a watch
    # on an isolated member sees nothing.
    watch = Lines(["etcdctl", "--endpoints", "10.231.0.11:2379,10.231.0.13:2379",
                   "watch", "/service/lab/leader"])
    # arping's interval is whole seconds: ten of them, 100 ms apart.
    arpings = []
    for _ in range(10):
        arpings.append(Lines(["arping", "-b", "-I", "pgherdlab0", VIP]))
        time.sleep(0.1)
    subprocess.run([PSQL, "-X", "-q", f"{ALL} port=5432 user=postgres dbname=postgres "
                    "target_session_attrs=read-write", "-c", "CREATE TABLE bench_writes (t timestamptz)"],
                   env=dict(os.environ, PGPASSWORD="lab-superuser-pw"), check=True, capture_output=True)
    through = {"HAProxy": Writer(lambda: write("host=10.231.0.11", 5000)),
               "PgBouncer": Writer(lambda: write("host=10.231.0.13", 6432)),
               "the VIP": Writer(lambda: write(f"host={VIP}", 5432)),
               "libpq host list": Writer(lambda: write(ALL, 5432))}
    time.sleep(2)
    out = {}
    started = time.monotonic()
    one_task("lab1", {"cluster": "lab", "settings": "/etc/pgherd/settings.yaml", "leader": "lab2"})
    time.sleep(2)
    for name, w in through.items():
        out[f"switchover, through {name}"] = w.gap(started, time.monotonic())
    out["switchover, VIP moved after the leader key"] = vip_moved(watch, arpings, started, "lab2",
                                                                  macs["lab2"])
    # The cut-off leader takes writes from this machine until Patroni
    # demotes it (it lost etcd); the gap runs until the new leader's.
    cut = time.monotonic()
    lab("partition", "lab2")
    while leader_of(cluster_from("10.231.0.11")) in (None, "lab2"):
        if time.monotonic() - cut > 120:
            sys.exit("bench: no new leader within 120 s of the partition")
        time.sleep(0.05)
    elected = time.monotonic()
    while not all(any(t > elected for t in w.acked) for w in through.values()):
        if time.monotonic() - elected > 60:
            sys.exit("bench: writes did not reach the new leader within 60 s")
        time.sleep(0.05)
    time.sleep(1)
    for name, w in through.items():
        out[f"leader partitioned, through {name}"] = w.gap(cut, time.monotonic())
    new = leader_of(cluster_from("10.231.0.11"))
    out["leader partitioned, VIP moved after the leader key"] = vip_moved(watch, arpings, cut, new,
                                                                          macs[new])
    for w in through.values():
        w.stop.set()
    watch.stop()
    for a in arpings:
        a.stop()
    lab("heal", "lab2")
    return out


def secured_inventory(where):
    """The lab's inventory with what inventories/example secures: TLS for
    etcd, the REST API (client certificates required) and PostgreSQL, and
    etcd authentication; the PKI made beside it, in `where`/pki (inside
    the inventory's directory, Ansible would try its files as inventory
    sources at every run)."""
    try:
        import yaml
    except ImportError:  # the machine's Python without PyYAML: the venv's
        venv = os.path.join(REPO, ".venv/bin/python")
        os.execv(venv, [venv, *sys.argv])
    pki = os.path.join(where, "pki")
    where = os.path.join(where, "inventory")
    os.makedirs(os.path.join(where, "group_vars"), exist_ok=True)
    with open(os.path.join(INVENTORY, "hosts.yml")) as f:
        hosts = f.read()
    with open(os.path.join(where, "hosts.yml"), "w") as f:
        f.write(hosts)
    with open(os.path.join(INVENTORY, "group_vars/all.yml")) as f:
        v = yaml.safe_load(f)
    tls = "/etc/pgherd/tls"
    s = v["pgherd_settings"]
    s["postgresql"]["client_ssl"] = {"sslmode": "verify-ca", "sslrootcert": f"{tls}/ca.pem"}
    s["patroni"]["etcd"].update(protocol="https", cacert=f"{tls}/ca.pem", cert=f"{tls}/client.pem",
                                key=f"{tls}/client.key")
    s["patroni"]["restapi"] = {"cafile": f"{tls}/ca.pem", "certfile": f"{tls}/server.pem",
                               "keyfile": f"{tls}/server.key", "verify_client": "required"}
    s["patroni"]["ctl"] = {"certfile": f"{tls}/client.pem", "keyfile": f"{tls}/client.key",
                           "cacert": f"{tls}/ca.pem"}
    v["pg_parameters"] = {"ssl": "on", "ssl_cert_file": f"{tls}/server.pem",
                          "ssl_key_file": f"{tls}/server.key", "ssl_ca_file": f"{tls}/ca.pem"}
    v["patroni_etcd_auth"] = {"username": "patroni", "password": "bench-etcd-patroni"}
    v["pgherd_etcd_root_password"] = "bench-etcd-root"
    v["pgherd_pki_dir"] = pki
    with open(os.path.join(where, "group_vars/all.yml"), "w") as f:
        yaml.safe_dump(v, f)
    return where


def bootstrap_run():
    import shutil
    import tempfile
    lab("down")
    lab("up", "--bare")
    where = tempfile.mkdtemp(prefix="pgherd-bench-bootstrap-")
    try:
        inventory = secured_inventory(where)
        bootstrap = os.path.join(REPO, "playbooks/bootstrap.yml")
        first, _ = playbook(bootstrap, inventory=inventory)
        rerun, out = playbook(bootstrap, inventory=inventory)
        if "changed=0" not in out or "changed=1" in out:
            sys.exit(f"bench: the bootstrap's re-run changed something:\n{out[-2000:]}")
        times = {"bare to running": first, "re-run": rerun}
        for step in ("begin", "sign", "finish"):
            times[f"CA rotation: {step}"], _ = playbook(bootstrap, "-e", f"pki_ca_rotation={step}",
                                                        inventory=inventory)
        return times
    finally:
        shutil.rmtree(where, ignore_errors=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--bootstrap", action="store_true")
    p.add_argument("--clients", action="store_true")
    args = p.parse_args()
    run = bootstrap_run if args.bootstrap else clients_run if args.clients else one_run
    runs = [run() for _ in range(args.runs)]
    lab("down")
    print("| lab, over SSH (3 hosts) | median | min-max |")
    print("|---|---|---|")
    for key in runs[0]:
        values = [r[key] for r in runs]
        print(f"| {key} | {statistics.median(values):.1f} s | {min(values):.1f}-{max(values):.1f} s |")


if __name__ == "__main__":
    main()
