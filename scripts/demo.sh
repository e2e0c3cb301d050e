#!/usr/bin/env bash
# The demo: a 3-node Patroni cluster on this machine, deployed by
# playbooks/site.yml through the pgherd.cluster collection.
#
#   scripts/demo.sh          set everything up, deploy, print the cluster
#   scripts/demo.sh status   print the cluster
#   scripts/demo.sh down     remove the nodes, stop etcd, leave no process
#   scripts/demo.sh etcd     only start the local etcd (Molecule's create)
#   scripts/demo.sh lab      the same cluster on the lab's three Debian hosts
#                            (scripts/lab.sh; docs/lab.md), over SSH
#   scripts/demo.sh lab-down take the lab down
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
work="$repo/.work"
etcd_dir="$work/demo-etcd"
etcd_url=http://127.0.0.1:2379
inventory=playbooks/inventories/local
export ANSIBLE_COLLECTIONS_PATH="$repo/ansible_collection"

log() { printf 'demo: %s\n' "$*" >&2; }

etcd_healthy() {
  etcdctl --endpoints="$etcd_url" --dial-timeout=1s endpoint health >/dev/null 2>&1
}

start_etcd() {
  if [ -f "$etcd_dir/pid" ] && kill -0 "$(cat "$etcd_dir/pid")" 2>/dev/null && etcd_healthy; then
    log "etcd already runs on $etcd_url"
    return
  fi
  if etcd_healthy || (exec 3<>/dev/tcp/127.0.0.1/2379) 2>/dev/null; then
    log "something else listens on 127.0.0.1:2379 (a packaged etcd service?): stop it and retry"
    exit 1
  fi
  mkdir -p "$etcd_dir"
  log "starting etcd on $etcd_url (data in $etcd_dir)"
  setsid etcd --name demo --data-dir "$etcd_dir/data" \
    --listen-client-urls "$etcd_url" --advertise-client-urls "$etcd_url" \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster demo=http://127.0.0.1:2380 \
    >"$etcd_dir/etcd.log" 2>&1 </dev/null &
  echo $! >"$etcd_dir/pid"
  for _ in $(seq 1 100); do
    etcd_healthy && return
    sleep 0.2
  done
  log "etcd did not become healthy; last lines of its log:"
  tail -n 20 "$etcd_dir/etcd.log" >&2
  exit 1
}

status() {
  local config="$work/local/pg1/etc/15-main.yaml"
  if [ ! -f "$config" ]; then
    log "no demo cluster here: run scripts/demo.sh"
    exit 1
  fi
  .venv/bin/patronictl -c "$config" list
}

down() {
  if [ -d "$work/local" ] && [ -x .venv/bin/ansible-playbook ]; then
    log "removing the nodes"
    .venv/bin/ansible-playbook -i "$inventory" playbooks/teardown.yml || true
  fi
  # Whatever the playbook could not stop (a broken run) goes too.
  pkill -KILL -f "$work/local/" 2>/dev/null || true
  if [ -f "$etcd_dir/pid" ]; then
    log "stopping etcd"
    kill "$(cat "$etcd_dir/pid")" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$(cat "$etcd_dir/pid")" 2>/dev/null || break
      sleep 0.1
    done
  fi
  rm -rf "$work/local" "$etcd_dir"
  log "done: no node and no etcd left"
}

case "${1:-up}" in
  up)
    bash scripts/setup.sh
    bash scripts/build-collection.sh
    start_etcd
    log "deploying the cluster with playbooks/site.yml"
    .venv/bin/ansible-playbook -i "$inventory" playbooks/site.yml
    status
    ;;
  status) status ;;
  etcd) start_etcd ;;
  down) down ;;
  lab)
    bash scripts/setup.sh
    bash scripts/build-collection.sh
    bash scripts/lab.sh up
    log "deploying the cluster on the lab's hosts with playbooks/site.yml"
    .venv/bin/ansible-playbook -i playbooks/inventories/lab playbooks/site.yml
    bash scripts/lab.sh ssh lab1 sudo patronictl -c /etc/patroni/15-main.yml list
    ;;
  lab-down) bash scripts/lab.sh down ;;
  *)
    echo "usage: scripts/demo.sh [up|status|down|etcd|lab|lab-down]" >&2
    exit 2
    ;;
esac
