#!/usr/bin/python3
"""The lab: Debian bookworm hosts with systemd as PID 1 (systemd-nspawn), each
with its own address on a bridge of its own, sshd and a non-root user with
passwordless sudo, booted from one cached image, partitioned on demand.

    scripts/lab.sh up [--hosts N | --sites A,B] [--old] [--bare]
                                      boot N hosts (default 3, at most 5);
                                      --sites 3,2 boots two sites of 3 and
                                      2 hosts (lab1-3, lab4-5), each its own
                                      etcd cluster (one etcd per site);
                                      --old adds one more, lab(N+1), from a
                                      Debian bullseye image (glibc 2.31)
                                      holding only the OS; --bare boots the
                                      N hosts with only the OS, apt going
                                      through a proxy on the machine and pip
                                      to a wheelhouse of Patroni on it
                                      (http://BRIDGE:3143/)
    scripts/lab.sh down               stop them and remove every trace
    scripts/lab.sh status             what runs
    scripts/lab.sh ssh NODE [CMD...]  a shell (or a command) on NODE
    scripts/lab.sh partition NODE     cut NODE off from its peers
    scripts/lab.sh heal NODE          undo it
    scripts/lab.sh crash NODE...      kill the NODEs at once, as a power cut
    scripts/lab.sh boot NODE...       boot crashed NODEs again, together
                                      (a site's etcd members wait for
                                      each other to start)
    scripts/lab.sh image [--old] [--bare]
                                      build (or restore) the image(s) only

The machine keeps its own state: hosts reach only the lab's addresses (their
default route goes to an address nothing answers on), and ip_forward is left
as it is. Everything lives under PGHERD_LAB_DIR (default /var/lib/pgherd-lab);
the image is cached as a tarball keyed by its recipe under PGHERD_LAB_CACHE
(default /var/cache/pgherd-lab).

Labs side by side: PGHERD_LAB_ID=N (default 0) names another lab, with its
own bridge (pgherdlabN), network (10.(231+N).0.0/24), state
(/var/lib/pgherd-labN), cgroups and apt cache, sharing only the cached
images. The lab inventory (playbooks/inventories/lab) and the tests read
the same variable.
"""

import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

ID = int(os.environ.get("PGHERD_LAB_ID") or "0")
if not 0 <= ID <= 20:
    raise SystemExit("lab: PGHERD_LAB_ID must be 0 to 20")
SUFFIX = str(ID) if ID else ""
LAB = f"pgherd-lab{SUFFIX}"
BRIDGE = f"pgherdlab{ID}"
NET = os.environ.get("PGHERD_LAB_NET", f"10.{231 + ID}.0")
MACHINE_ADDR = f"{NET}.1"
# An address on the bridge nothing answers on: the hosts' default route,
# so that facts have a default interface and nothing leaves the lab.
NOWHERE = f"{NET}.254"
USER = "ops"
MAX_HOSTS = 5
STATE = os.environ.get("PGHERD_LAB_DIR", f"/var/lib/pgherd-lab{SUFFIX}")
CACHE = os.environ.get("PGHERD_LAB_CACHE", "/var/cache/pgherd-lab")
MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"

# What the image holds. Changing the recipe changes the cache key.
BASE_PACKAGES = [
    "systemd", "systemd-sysv", "dbus", "libpam-systemd", "openssh-server",
    "python3", "iproute2", "nftables", "sudo", "ca-certificates", "procps",
    "less", "locales", "acl",
]
PG_PACKAGES = [
    "postgresql-15", "postgresql-client-15", "patroni", "python3-psycopg2",
    "python3-etcd", "etcd-server", "etcd-client", "python3-venv",
]
# The Patroni the cluster's hosts run (the lab inventory's
# patroni.execpath): bookworm's package is 3.0.2, which with etcd v3 can
# take the leader key back from a new leader after a partition and lose
# acknowledged writes (pgherd refuses it for new members). As the packages
# role does with packages_patroni_from: pip, a virtualenv from the
# wheelhouse; Debian's package stays for its patroni@ unit and layout.
PATRONI_VENV = "/opt/patroni"
PATRONI_PIP = ["patroni[etcd3]==4.0.11", "psycopg2-binary"]
RECIPE_VERSION = "2"
# The older Debian an "old" host boots (`up --old`): the OS alone, for the
# module binaries' portability (its C library is older than the build's).
OLD_SUITE = "bullseye"
# The images: the lab's (the cluster's packages in), bare hosts of the same
# Debian (`up --bare`: the OS alone, packages installed by the collection
# through the apt proxy), and the old host's.
FLAVORS = {"cluster": (SUITE, PG_PACKAGES), "bare": (SUITE, []), "old": (OLD_SUITE, [])}
# apt on bare hosts goes through a proxy on the machine's bridge address:
# only the machine reaches the Debian archive.
APT_PROXY_PORT = 3142
# pip on bare hosts installs Patroni (the packages role's
# packages_patroni_from: pip) from a wheelhouse of these versions and their
# dependencies, built once on the machine (same Debian, same Python) into
# the cache and served on the bridge address.
WHEEL_PORT = 3143
WHEELHOUSE = ["patroni[etcd3]==4.0.11", "patroni[etcd3]==4.1.5", "psycopg2-binary"]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def log(msg):
    print(f"lab: {msg}", file=sys.stderr, flush=True)


def run(cmd, check=True, capture=False, **kw):
    if capture:
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        kw.setdefault("text", True)
    result = subprocess.run(cmd, **kw)
    if check and result.returncode != 0:
        err = (result.stderr or "").strip() if capture else ""
        raise SystemExit(f"lab: {' '.join(map(str, cmd))} failed ({result.returncode}) {err}")
    return result


def host_names(n):
    return [f"lab{i}" for i in range(1, n + 1)]


def host_addr(name):
    return f"{NET}.{10 + int(name[3:])}"


def recipe_key(flavor="cluster"):
    suite, packages = FLAVORS[flavor]
    venv = [PATRONI_VENV, PATRONI_PIP] if flavor == "cluster" else []
    text = json.dumps([RECIPE_VERSION, suite, BASE_PACKAGES, packages, USER] + venv)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def image_dir(flavor="cluster"):
    return os.path.join(STATE, "image" if flavor == "cluster" else f"image-{flavor}")


def tarball_family(flavor):
    """The cached tarball's name without its key: older ones of the same
    family are removed when a new one is cached."""
    suite, _ = FLAVORS[flavor]
    return f"bare-{suite}-" if flavor == "bare" else f"{suite}-"


def paths():
    return {
        "hosts": os.path.join(STATE, "hosts"),
        "key": os.path.join(STATE, "id_ed25519"),
    }


# --- the machine ------------------------------------------------------------

def machine_packages():
    need = []
    for binary, package in [("systemd-nspawn", "systemd-container"), ("debootstrap", "debootstrap"),
                            ("zstd", "zstd"), ("nft", "nftables"), ("ssh", "openssh-client")]:
        if shutil.which(binary) is None:
            need.append(package)
    if need:
        log(f"installing {' '.join(need)}")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        run(["apt-get", "update", "-qq"], env=env)
        run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *need], env=env,
            stdout=subprocess.DEVNULL)


# --- the image --------------------------------------------------------------

def chroot(root, script):
    run(["chroot", root, "/bin/sh", "-ec", script],
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive",
             "LC_ALL": "C"})


def build_image(target, flavor):
    """debootstrap, then the packages, with no service started in the chroot."""
    suite, packages = FLAVORS[flavor]
    work = target + ".building"
    shutil.rmtree(work, ignore_errors=True)
    debs = os.path.join(CACHE, "debs", suite)
    os.makedirs(debs, exist_ok=True)
    log(f"debootstrap {suite} into {work} (a few minutes on a fresh machine)")
    run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
         f"--cache-dir={debs}", suite, work, MIRROR], stdout=subprocess.DEVNULL)
    policy = os.path.join(work, "usr/sbin/policy-rc.d")
    with open(policy, "w") as f:
        f.write("#!/bin/sh\nexit 101\n")
    os.chmod(policy, 0o755)
    # postgresql-common makes a cluster on install unless told not to:
    # Patroni makes the clusters here.
    os.makedirs(os.path.join(work, "etc/postgresql-common/createcluster.d"), exist_ok=True)
    with open(os.path.join(work, "etc/postgresql-common/createcluster.d/pgherd-lab.conf"), "w") as f:
        f.write("create_main_cluster = false\n")
    if packages:
        log(f"installing {', '.join(packages)} in the image")
        chroot(work, f"""
            apt-get update -qq
            apt-get install -y -qq --no-install-recommends {' '.join(packages)} >/dev/null
            apt-get clean
            rm -rf /var/lib/apt/lists/*
        """)
    if flavor == "cluster":
        wheels = os.path.join(work, "tmp/wheels")
        shutil.copytree(ensure_wheelhouse(), wheels)
        log(f"installing {' '.join(PATRONI_PIP)} into {PATRONI_VENV} in the image")
        pip = " ".join(f"'{p}'" for p in PATRONI_PIP)
        chroot(work, f"""
            python3 -m venv {PATRONI_VENV}
            {PATRONI_VENV}/bin/pip install -q --disable-pip-version-check --no-index \
              --find-links /tmp/wheels {pip}
            rm -rf /tmp/wheels
        """)
    chroot(work, f"""
        # Services the lab or pgherd start themselves.
        for unit in etcd.service patroni.service postgresql.service; do
          systemctl disable $unit >/dev/null 2>&1 || true
        done
        systemctl enable systemd-networkd.service >/dev/null 2>&1
        systemctl mask systemd-resolved.service apt-daily.timer apt-daily-upgrade.timer \
          e2scrub_reap.service >/dev/null 2>&1 || true
        useradd --create-home --shell /bin/bash {USER}
        echo '{USER} ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/{USER}
        chmod 0440 /etc/sudoers.d/{USER}
        echo 'en_US.UTF-8 UTF-8' > /etc/locale.gen
        locale-gen >/dev/null
        : > /etc/machine-id
    """)
    os.remove(policy)
    shutil.rmtree(target, ignore_errors=True)
    os.rename(work, target)


def cache_lock():
    """The cache's lock, held while an image or the wheelhouse is built:
    labs side by side build each once, the second waiting for the first."""
    os.makedirs(CACHE, exist_ok=True)
    f = open(os.path.join(CACHE, ".lock"), "w")
    fcntl.flock(f, fcntl.LOCK_EX)
    return f


def ensure_image(flavor="cluster"):
    key = recipe_key(flavor)
    target = image_dir(flavor)
    stamp = os.path.join(target, ".pgherd-lab-key")
    if os.path.exists(stamp) and open(stamp).read().strip() == key:
        return target
    if flavor == "cluster":
        # Built before the lock is taken: the image's recipe needs it.
        ensure_wheelhouse()
    with cache_lock():
        return restore_or_build_image(flavor, key, target, stamp)


def restore_or_build_image(flavor, key, target, stamp):
    family = tarball_family(flavor)
    tarball = os.path.join(CACHE, f"{family}{key}.tar.zst")
    if os.path.exists(tarball):
        log(f"restoring the image from {tarball}")
        shutil.rmtree(target, ignore_errors=True)
        os.makedirs(target)
        run(["tar", "--zstd", "-xpf", tarball, "-C", target, "--numeric-owner"])
    else:
        build_image(target, flavor)
        log(f"caching the image as {tarball}")
        partial = tarball + ".partial"
        run(["tar", "--zstd", "-cpf", partial, "-C", target, "--numeric-owner", "."])
        os.rename(partial, tarball)
        for old in os.listdir(CACHE):
            stale = old.startswith(family) and old[len(family):].count("-") == 0
            if stale and old.endswith(".tar.zst") and old != os.path.basename(tarball):
                os.remove(os.path.join(CACHE, old))
    with open(stamp, "w") as f:
        f.write(key + "\n")
    return target


# --- hosts --------------------------------------------------------------------

def host_dir(name):
    return os.path.join(paths()["hosts"], name)


def cgroup_dirs(name):
    return [f"/sys/fs/cgroup/{tree}/{LAB}/{name}" for tree in ("systemd", "unified")
            if os.path.isdir(f"/sys/fs/cgroup/{tree}")]


def mounted(path):
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


def write(path, text, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def prepare_host(name, names, members, image, token="pgherd-lab"):
    d = host_dir(name)
    root = os.path.join(d, "root")
    for sub in ("upper", "work", "root"):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    if not mounted(root):
        run(["mount", "-t", "overlay", "overlay", "-o",
             f"lowerdir={image},upperdir={d}/upper,workdir={d}/work", root])
    addr = host_addr(name)
    write(f"{root}/etc/hostname", name + "\n")
    hosts = "127.0.0.1 localhost\n" + "".join(f"{host_addr(n)} {n}\n" for n in names)
    write(f"{root}/etc/hosts", hosts)
    write(f"{root}/etc/systemd/network/10-lab.network",
          f"[Match]\nName=host0\n\n[Network]\nAddress={addr}/24\nGateway={NOWHERE}\n"
          "LinkLocalAddressing=no\nIPv6AcceptRA=no\n")
    home = f"{root}/home/{USER}"
    with open(paths()["key"] + ".pub") as f:
        write(f"{home}/.ssh/authorized_keys", f.read(), 0o600)
    uid = gid = None
    with open(f"{root}/etc/passwd") as f:
        for line in f:
            fields = line.split(":")
            if fields[0] == USER:
                uid, gid = int(fields[2]), int(fields[3])
    for p in (home, f"{home}/.ssh", f"{home}/.ssh/authorized_keys"):
        os.chown(p, uid, gid)
    os.chmod(f"{home}/.ssh", 0o700)
    # etcd: one member per host, all of them in the initial cluster. Pre-vote
    # (etcd 3.5's default, off in Debian's 3.4): a member back from a
    # partition does not force an election with the term it raised alone
    # (3 to 22 during a 25 s partition; the heal then left the cluster 1.1 s
    # without an etcd leader, a disruption real networks do not need).
    cluster = ",".join(f"{n}=http://{host_addr(n)}:2380" for n in members)
    write(f"{root}/etc/default/etcd",
          f"ETCD_NAME={name}\nETCD_DATA_DIR=/var/lib/etcd/lab\n"
          f"ETCD_LISTEN_PEER_URLS=http://{addr}:2380\n"
          f"ETCD_LISTEN_CLIENT_URLS=http://{addr}:2379,http://127.0.0.1:2379\n"
          f"ETCD_INITIAL_ADVERTISE_PEER_URLS=http://{addr}:2380\n"
          f"ETCD_ADVERTISE_CLIENT_URLS=http://{addr}:2379\n"
          f"ETCD_INITIAL_CLUSTER={cluster}\nETCD_INITIAL_CLUSTER_STATE=new\n"
          f"ETCD_INITIAL_CLUSTER_TOKEN={token}\nETCD_PRE_VOTE=true\n")


def pid_file(name):
    return os.path.join(host_dir(name), "nspawn.pid")


def nspawn_pid(name):
    try:
        pid = int(open(pid_file(name)).read())
    except (OSError, ValueError):
        return None
    return pid if os.path.exists(f"/proc/{pid}") else None


def machine_name(name):
    """nspawn's name for a host, which names the machine's end of its veth
    (vb-NAME): labs side by side must not share one."""
    return name if ID == 0 else f"{name}-{ID}"


def wait_veth_gone(name, deadline=1):
    """The machine's end of a host's veth outlives a crash for a while (its
    namespace is torn down asynchronously, up to 30 s when several go at
    once); an nspawn started meanwhile cannot make its own and exits.
    Waits a moment for it, then deletes it (the pair goes with it)."""
    link = f"vb-{machine_name(name)}"[:15]
    start = time.monotonic()
    while run(["ip", "link", "show", link], check=False, capture=True).returncode == 0:
        if time.monotonic() - start > deadline:
            run(["ip", "link", "del", link], check=False, capture=True)
            return
        time.sleep(0.1)


def start_host(name):
    """systemd-nspawn, from a cgroup of the host's own, restarted when the
    host reboots (nspawn exits with 133)."""
    wait_veth_gone(name)
    d = host_dir(name)
    for cg in cgroup_dirs(name):
        os.makedirs(cg, exist_ok=True)
    procs = " ".join(f"{cg}/cgroup.procs" for cg in cgroup_dirs(name))
    script = f"""
        for f in {procs}; do echo $$ > $f; done
        while :; do
          systemd-nspawn --quiet --boot --keep-unit --register=no --machine={machine_name(name)} \
            --directory={d}/root --network-bridge={BRIDGE} --resolv-conf=off \
            --timezone=off --link-journal=no
          rc=$?
          [ $rc -eq 133 ] || exit $rc
        done
    """
    log_file = open(os.path.join(d, "console.log"), "ab")
    log_file.write(f"\n--- lab: {name} started at {time.strftime('%H:%M:%S')}\n".encode())
    log_file.flush()
    proc = subprocess.Popen(["/bin/sh", "-c", script], stdin=subprocess.DEVNULL, stdout=log_file,
                            stderr=log_file, start_new_session=True,
                            env=dict(os.environ, SYSTEMD_NSPAWN_UNIFIED_HIERARCHY="1"))
    with open(pid_file(name), "w") as f:
        f.write(f"{proc.pid}\n")


def cgroup_pids(name):
    pids = set()
    for cg in cgroup_dirs(name):
        for dirpath, _, files in os.walk(cg):
            if "cgroup.procs" in files:
                try:
                    pids.update(int(p) for p in open(os.path.join(dirpath, "cgroup.procs")).read().split())
                except OSError:
                    pass
    return pids


def init_pid(name):
    """The host's systemd (PID 1 inside it), seen from the machine."""
    for pid in cgroup_pids(name):
        try:
            comm = open(f"/proc/{pid}/comm").read().strip()
            ns_pid = [l for l in open(f"/proc/{pid}/status") if l.startswith("NSpid:")]
        except OSError:
            continue
        if comm == "systemd" and ns_pid and ns_pid[0].split()[-1] == "1":
            return pid
    return None


def ssh_args(name):
    return ["ssh", "-i", paths()["key"], "-o", "StrictHostKeyChecking=no", "-o",
            "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=2",
            "-o", "BatchMode=yes", f"{USER}@{host_addr(name)}"]


def ssh(name, command, check=True, capture=True):
    return run(ssh_args(name) + [command], check=check, capture=capture)


def wait_booted(name, deadline=120):
    start = time.monotonic()
    last = "no answer"
    while time.monotonic() - start < deadline:
        if nspawn_pid(name) is None:
            last = "systemd-nspawn exited"
            break
        r = ssh(name, "systemctl is-system-running", check=False)
        state = (r.stdout or "").strip()
        if state in ("running", "degraded"):
            if state == "degraded":
                failed = ssh(name, "systemctl --failed --no-legend --plain", check=False).stdout
                log(f"{name} booted degraded: {failed.strip()}")
            return
        last = state or (r.stderr or "").strip() or last
        time.sleep(0.3)
    tail = open(os.path.join(host_dir(name), "console.log"), errors="replace").read()[-2000:]
    raise SystemExit(f"lab: {name} did not boot (waited {time.monotonic() - start:.0f} s of "
                     f"{deadline}); last seen: {last}\n{tail}")


def start_etcd(names, deadline=60):
    for n in names:
        ssh(n, "sudo systemctl enable --now --no-block etcd")
    endpoints = ",".join(f"http://{host_addr(n)}:2379" for n in names)
    start = time.monotonic()
    last = ""
    while time.monotonic() - start < deadline:
        r = ssh(names[0], f"ETCDCTL_API=3 etcdctl --endpoints={endpoints} endpoint health", check=False)
        if r.returncode == 0:
            return
        last = (r.stderr or r.stdout or "").strip()
        time.sleep(0.3)
    raise SystemExit(f"lab: etcd not healthy within {deadline} s: {last}")


def bridge_up():
    if run(["ip", "link", "show", BRIDGE], check=False, capture=True).returncode != 0:
        run(["ip", "link", "add", BRIDGE, "type", "bridge"])
        run(["ip", "addr", "add", f"{MACHINE_ADDR}/24", "dev", BRIDGE])
    run(["ip", "link", "set", BRIDGE, "up"])


def lab_hosts():
    d = paths()["hosts"]
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


# --- commands -----------------------------------------------------------------

def server_pid(name):
    """The pid of the lab's server NAME (apt-proxy, wheels), if it runs."""
    try:
        pid = int(open(os.path.join(STATE, f"{name}.pid")).read())
    except (OSError, ValueError):
        return None
    return pid if os.path.exists(f"/proc/{pid}") else None


def start_server(name, argv, port, log_path, deadline=20):
    """ARGV in a session of its own, its pid kept as NAME's, until it
    listens on the bridge address's PORT."""
    if server_pid(name) is not None:
        return
    log_file = open(log_path, "ab")
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
                            start_new_session=True)
    with open(os.path.join(STATE, f"{name}.pid"), "w") as f:
        f.write(f"{proc.pid}\n")
    start = time.monotonic()
    while time.monotonic() - start < deadline:
        if run(["bash", "-c", f"exec 3<>/dev/tcp/{MACHINE_ADDR}/{port}"],
               check=False, capture=True).returncode == 0:
            return
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    tail = open(log_path, errors="replace").read()[-1000:]
    raise SystemExit(f"lab: {name} did not listen on {MACHINE_ADDR}:{port}: {tail}")


def stop_server(name):
    pid = server_pid(name)
    if pid is not None:
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    try:
        os.remove(os.path.join(STATE, f"{name}.pid"))
    except OSError:
        pass


def start_apt_proxy():
    """apt-cacher-ng on the bridge address, as a plain caching proxy (no
    remapping to mirrors that do not resolve here), its cache kept under
    the lab's cache directory so that a later lab installs from it."""
    if server_pid("apt-proxy") is not None:
        return
    program = shutil.which("apt-cacher-ng") or "/usr/sbin/apt-cacher-ng"
    if not os.access(program, os.X_OK):
        raise SystemExit("lab: apt-cacher-ng is missing: scripts/setup.sh installs it")
    conf = os.path.join(STATE, "apt-proxy")
    # One cache per lab: two proxies never share one.
    apt_cache = os.path.join(CACHE, f"apt{SUFFIX}")
    write(os.path.join(conf, "acng.conf"),
          f"CacheDir: {apt_cache}\nLogDir: {conf}\n"
          "SupportDir: /usr/lib/apt-cacher-ng\n"
          f"Port: {APT_PROXY_PORT}\nBindAddress: {MACHINE_ADDR}\nExThreshold: 4\n")
    os.makedirs(apt_cache, exist_ok=True)
    start_server("apt-proxy", [program, "-c", conf, "ForeGround=1"], APT_PROXY_PORT,
                 os.path.join(conf, "console.log"))


def wheelhouse_dir():
    key = hashlib.sha256(json.dumps(WHEELHOUSE).encode()).hexdigest()[:12]
    return os.path.join(CACHE, f"wheels-{key}")


def ensure_wheelhouse():
    """The wheels of WHEELHOUSE, built with the repository's venv (pip
    wheel: every dependency as a wheel, so that hosts install without an
    index and without building)."""
    d = wheelhouse_dir()
    if os.path.exists(os.path.join(d, ".complete")):
        return d
    with cache_lock():
        if not os.path.exists(os.path.join(d, ".complete")):
            build_wheelhouse(d)
    return d


def build_wheelhouse(d):
    pip = os.path.join(REPO, ".venv/bin/pip")
    if not os.access(pip, os.X_OK):
        raise SystemExit("lab: the repository's venv is missing: scripts/setup.sh makes it")
    started = time.monotonic()
    tmp = d + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    for wanted in [w for w in WHEELHOUSE if w.startswith("patroni")]:
        run([pip, "wheel", "-q", "--use-pep517", "--disable-pip-version-check", "-w", tmp, wanted]
            + [w for w in WHEELHOUSE if not w.startswith("patroni")])
    open(os.path.join(tmp, ".complete"), "w").close()
    shutil.rmtree(d, ignore_errors=True)
    os.rename(tmp, d)
    log(f"wheelhouse built in {time.monotonic() - started:.1f} s: {len(os.listdir(d)) - 1} wheels")


def start_wheel_server():
    """The wheelhouse over HTTP on the bridge address (pip's --find-links)."""
    if server_pid("wheels") is not None:
        return
    d = ensure_wheelhouse()
    start_server("wheels", ["/usr/bin/python3", "-m", "http.server", str(WHEEL_PORT), "--bind", MACHINE_ADDR,
                            "--directory", d], WHEEL_PORT, os.path.join(STATE, "wheels.log"))


def cmd_up(args):
    n = 3
    old = "--old" in args
    bare = "--bare" in args
    args = [a for a in args if a not in ("--old", "--bare")]
    sites = None
    if args[:1] == ["--hosts"]:
        n = int(args[1])
    elif args[:1] == ["--sites"]:
        sites = [int(x) for x in args[1].split(",")]
        n = sum(sites)
        if bare or old or min(sites) < 1:
            raise SystemExit("lab: --sites takes sizes of 1 or more, without --old or --bare")
    if not 1 <= n <= MAX_HOSTS:
        raise SystemExit(f"lab: --hosts must be 1 to {MAX_HOSTS}")
    started = time.monotonic()
    machine_packages()
    image = ensure_image("bare" if bare else "cluster")
    images = {name: image for name in host_names(n)}
    if old:
        images[f"lab{n + 1}"] = ensure_image("old")
    key = paths()["key"]
    if not os.path.exists(key):
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", LAB, "-f", key])
    names = list(images)
    # Each site its own etcd cluster (one site unless --sites).
    groups, first = [], 0
    for size in sites or ([] if bare else [n]):
        groups.append(names[first:first + size])
        first += size
    site_of = {m: (i, g) for i, g in enumerate(groups) for m in g}
    bridge_up()
    # Every host's apt goes through the proxy: bare hosts get all their
    # packages so, the others what a role adds (HAProxy, vip-manager).
    start_apt_proxy()
    if bare:
        start_wheel_server()
    for name in names:
        if nspawn_pid(name) is None:
            i, members = site_of.get(name, (0, []))
            prepare_host(name, names, members, images[name],
                         "pgherd-lab" if i == 0 else f"pgherd-lab-site{i + 1}")
            write(os.path.join(host_dir(name), "root/etc/apt/apt.conf.d/01pgherd-lab-proxy"),
                  f'Acquire::http::Proxy "http://{MACHINE_ADDR}:{APT_PROXY_PORT}";\n')
            start_host(name)
    for name in names:
        wait_booted(name)
    for members in groups:
        start_etcd(members)
    log(f"{len(names)} hosts up in {time.monotonic() - started:.1f} s: "
        + ", ".join(f"{x} {host_addr(x)}" + (f" ({OLD_SUITE})" if images[x] == image_dir("old") else "")
                    for x in names))


def stop_host(name, deadline=30):
    pid = nspawn_pid(name)
    if pid is not None:
        # nspawn turns SIGTERM into an orderly poweroff of the host; the
        # loop around it must not boot it again.
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        start = time.monotonic()
        while time.monotonic() - start < deadline and cgroup_pids(name):
            time.sleep(0.2)
    for p in cgroup_pids(name):
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    start = time.monotonic()
    while cgroup_pids(name) and time.monotonic() - start < 10:
        time.sleep(0.1)


def remove_cgroups(name):
    for cg in cgroup_dirs(name):
        for dirpath, dirs, _ in sorted(os.walk(cg), key=lambda t: -t[0].count("/")):
            try:
                os.rmdir(dirpath)
            except OSError:
                pass


def cmd_down(args):
    names = lab_hosts()
    for name in names:
        stop_host(name)
    for name in names:
        root = os.path.join(host_dir(name), "root")
        if mounted(root):
            run(["umount", root])
        remove_cgroups(name)
        shutil.rmtree(host_dir(name), ignore_errors=True)
    for tree in ("systemd", "unified"):
        try:
            os.rmdir(f"/sys/fs/cgroup/{tree}/{LAB}")
        except OSError:
            pass
    stop_server("apt-proxy")
    stop_server("wheels")
    if run(["ip", "link", "show", BRIDGE], check=False, capture=True).returncode == 0:
        run(["ip", "link", "del", BRIDGE])
    log("down: no host, mount, cgroup or bridge left")


def cmd_status(args):
    names = lab_hosts()
    if not names:
        print("no lab host")
        return
    for name in names:
        pid = nspawn_pid(name)
        state = "stopped"
        if pid is not None:
            r = ssh(name, "systemctl is-system-running", check=False)
            state = (r.stdout or "").strip() or "booting"
        parted = name in partitioned()
        print(f"{name}  {host_addr(name):<15} {state}{'  (partitioned)' if parted else ''}")


def partitioned():
    out = set()
    for name in lab_hosts():
        pid = init_pid(name)
        if pid is None:
            continue
        r = run(["nsenter", "-t", str(pid), "-n", "nft", "list", "tables"], check=False, capture=True)
        if "pgherd_partition" in (r.stdout or ""):
            out.add(name)
    return out


def need_host(args):
    if not args or args[0] not in lab_hosts():
        raise SystemExit(f"lab: name a host: {', '.join(lab_hosts()) or 'none is up'}")
    return args[0]


def need_hosts(args):
    for name in args:
        need_host([name])
    return need_host(args) and args


def cmd_partition(args):
    name = need_host(args)
    pid = init_pid(name)
    if pid is None:
        raise SystemExit(f"lab: {name} is not running")
    # Cut from every lab address but the machine's, both ways, on the lab's
    # interface only (its own address, over lo, still answers): ssh from
    # the machine still works.
    rules = f"""
table inet pgherd_partition {{
  chain input {{
    type filter hook input priority -10; policy accept;
    iifname "host0" ip saddr {NET}.0/24 ip saddr != {MACHINE_ADDR} drop
  }}
  chain output {{
    type filter hook output priority -10; policy accept;
    oifname "host0" ip daddr {NET}.0/24 ip daddr != {MACHINE_ADDR} drop
  }}
}}
"""
    run(["nsenter", "-t", str(pid), "-n", "nft", "-f", "-"], input=rules, text=True)
    log(f"{name} cut off from its peers")


def cmd_heal(args):
    name = need_host(args)
    pid = init_pid(name)
    if pid is None:
        raise SystemExit(f"lab: {name} is not running")
    run(["nsenter", "-t", str(pid), "-n", "nft", "delete", "table", "inet", "pgherd_partition"],
        check=False, capture=True)
    log(f"{name} reaches its peers again")


def cmd_crash(args):
    names = need_hosts(args)
    for name in names:
        pid = nspawn_pid(name)
        if pid is not None:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for p in cgroup_pids(name):
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
    start = time.monotonic()
    for name in names:
        while (cgroup_pids(name) or nspawn_pid(name) is not None) and time.monotonic() - start < 10:
            time.sleep(0.1)
        wait_veth_gone(name)
        log(f"{name} crashed (killed, disk as it was)")


def cmd_boot(args):
    names = need_hosts(args)
    for name in names:
        if nspawn_pid(name) is not None:
            raise SystemExit(f"lab: {name} runs already")
    for name in names:
        start_host(name)
    for name in names:
        wait_booted(name)
        log(f"{name} booted")


def cmd_ssh(args):
    name = need_host(args)
    os.execvp("ssh", ssh_args(name) + args[1:])


def cmd_image(args):
    machine_packages()
    log(f"image at {ensure_image()}")
    if "--old" in args:
        log(f"old image at {ensure_image('old')}")
    if "--bare" in args:
        log(f"bare image at {ensure_image('bare')}")


COMMANDS = {
    "up": cmd_up, "down": cmd_down, "status": cmd_status, "ssh": cmd_ssh,
    "partition": cmd_partition, "heal": cmd_heal, "crash": cmd_crash, "boot": cmd_boot,
    "image": cmd_image,
}


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    if os.geteuid() != 0:
        raise SystemExit("lab: run it as root (it makes a bridge, mounts and containers)")
    os.makedirs(paths()["hosts"], exist_ok=True)
    COMMANDS[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    main()
