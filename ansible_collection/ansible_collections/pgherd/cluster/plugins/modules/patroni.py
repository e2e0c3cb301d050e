# Generated from the module's argument spec (crates/pgherd-modules); do not edit.
# pgherd.cluster.patroni is a native executable (bin/patroni, linked as plugins/modules/patroni);
# this file holds its documentation and the argument spec its action plugin
# checks a task against on the controller.

DOCUMENTATION = r"""
attributes:
  check_mode:
    description: "Reports exactly what a real run changes, and changes nothing."
    support: full
  diff_mode:
    description: "Shows the change, with secrets masked."
    support: full
  platform:
    description: "Linux hosts of the architecture the module was built for."
    platforms: posix
    support: full
author:
- "pgherd maintainers"
description:
- "Reads a Patroni cluster, changes its dynamic configuration, switches over, fails over, pauses, restarts, reloads, reinitialises members and removes the cluster from the DCS."
- "Every operation checks before it acts and confirms on the cluster after; nothing differs, nothing is sent."
- "Runs on any member (the others are found in etcd) or from the controller given a member's REST API with I(restapi)."
module: patroni
notes:
- "Operations given together run in this order: resume, dynamic configuration, reload, switchover or failover, restarts, reinitialisations, pause."
- "The site settings (option I(settings)) are described in the collection's C(docs/settings.md)."
options:
  backup:
    choices:
    - full
    - diff
    - incr
    description:
    - "Take a pgBackRest backup of this type of the leader. Only one host takes it: the leader's (its instance has the I(pgbackrest) option) or, when the settings name a C(pgbackrest.repository.host), the repository host (the host holding a pgBackRest configuration in its C(config_path) that lists the cluster's members, and running none); on the others the task is skipped. Run it on every host of the cluster (and the repository host) to back up wherever the leader is. I(wait_timeout) bounds the backup's duration."
    type: str
  cluster:
    aliases:
    - scope
    description:
    - "The cluster (Patroni's C(scope))."
    required: true
    type: str
  dynamic_config:
    description:
    - "Wanted dynamic configuration (nested; null deletes a key). Only what differs from C(GET /config) is sent with C(PATCH /config)."
    type: dict
  etcd_password:
    description:
    - "Its password."
    no_log: true
    type: str
  etcd_username:
    description:
    - "etcd user; defaults to the settings' C(patroni.etcd.username)."
    type: str
  failover_to:
    description:
    - "Fail over to this member; only when there is no healthy leader, unless I(force)."
    type: str
  force:
    default: false
    description:
    - "Allow I(failover_to) while a healthy leader runs, and I(promote) while the primary cluster answers or cannot be asked."
    type: bool
  leader:
    description:
    - "Switch over so that this member leads. Refused when it is not a streaming replica, lags more than I(maximum_lag), the cluster is paused, or (synchronous mode) it is not a synchronous standby."
    type: str
  maximum_lag:
    description:
    - "Largest replication lag, in bytes, of a switchover candidate. Defaults to the cluster's C(maximum_lag_on_failover)."
    type: int
  paused:
    description:
    - "Maintenance mode: pause or resume Patroni's automatic failover."
    type: bool
  promote:
    default: false
    description:
    - "Promote a standby cluster (the disaster-recovery failover): its dynamic configuration's C(standby_cluster) removed, its standby leader leads a primary cluster, and the task returns once it runs as a primary holding the leader key. Refused while the primary it follows answers (a TCP connection to C(standby_cluster)'s host and port), or when it follows a repository only, unless I(force). Nothing to do on a cluster that is no standby cluster."
    type: bool
  reinit:
    description:
    - "Replicas to re-clone from the leader."
    elements: str
    type: list
  reload:
    default: false
    description:
    - "Ask every member to reload its configuration."
    type: bool
  restapi:
    description:
    - "C(host:port) of a member's REST API. Without it, members are found in the DCS."
    type: str
  restapi_password:
    description:
    - "Its password."
    no_log: true
    type: str
  restapi_username:
    description:
    - "Basic authentication user of the REST API."
    type: str
  restart:
    choices:
    - pending
    - all
    description:
    - "Restart members with a pending restart (or all), replicas first, the leader last."
    type: str
  restart_leader_by_switchover:
    default: false
    description:
    - "Switch over to the least lagging replica before restarting the leader."
    type: bool
  scheduled_at:
    description:
    - "Schedule the switchover at this ISO 8601 time instead of now."
    type: str
  settings:
    description:
    - "Site settings: the path of a YAML file, or the settings as a mapping."
    - "When not given, C(/etc/pgherd/settings.yaml) is read if it exists, else built-in defaults apply."
    type: raw
  state:
    choices:
    - present
    - info
    - absent
    default: present
    description:
    - "C(present) applies the operations given; C(info) only reads the cluster; C(absent) removes the cluster's keys from the DCS (see I(system_identifier))."
    type: str
  system_identifier:
    description:
    - "With C(state: absent): the cluster's system identifier, which must match the DCS's C(initialize) key."
    type: str
  wait_timeout:
    default: 120
    description:
    - "Seconds to wait for each confirmation (new leader, members streaming, pause seen)."
    type: int
requirements:
- "An etcd cluster (v3 API) holding the cluster's keys, reachable from the host the task runs on, unless I(restapi) is given."
- "Patroni's REST API of the members, reachable from that host."
- "pgBackRest on the leader's host (or the repository host), for I(backup)."
seealso:
- module: pgherd.cluster.instance
- description: "The endpoints the module calls."
  link: "https://patroni.readthedocs.io/en/latest/rest_api.html"
  name: "Patroni's REST API"
short_description: "Cluster-wide operations on a Patroni cluster"
version_added: "0.1.0"
"""

EXAMPLES = r"""
- name: Read the cluster
  pgherd.cluster.patroni:
    cluster: main
    state: info
  register: main

- name: Dynamic configuration; only what differs is sent
  pgherd.cluster.patroni:
    cluster: main
    dynamic_config:
      maximum_lag_on_failover: 2097152
      postgresql:
        parameters:
          work_mem: 32MB
          max_wal_size: null

- name: Switch over to pg2, checked before and confirmed after
  pgherd.cluster.patroni:
    cluster: main
    leader: pg2

- name: Maintenance mode
  pgherd.cluster.patroni:
    cluster: main
    paused: true

- name: Back to automatic failover
  pgherd.cluster.patroni:
    cluster: main
    paused: false

- name: Restart members waiting for it, replicas first, the leader after a switchover
  pgherd.cluster.patroni:
    cluster: main
    restart: pending
    restart_leader_by_switchover: true

- name: Back up on the leader; run on every member's host, the leader's takes it
  pgherd.cluster.patroni:
    cluster: main
    backup: full
    wait_timeout: 3600

- name: Remove a stopped cluster from etcd, guarded by its system identifier
  pgherd.cluster.patroni:
    cluster: main
    state: absent
    system_identifier: "{{ main.cluster.system_identifier }}"
"""

RETURN = r"""
backup:
  contains:
    label:
      description: "pgBackRest's label of the backup."
      returned: success
      sample: "20261201-220000F"
      type: str
    repository_size:
      description: "Bytes it takes in the repository."
      returned: success
      sample: 3100000
      type: int
    size:
      description: "Bytes of the database."
      returned: success
      sample: 23000000
      type: int
    start:
      description: "Start, in Unix time."
      returned: success
      sample: 1796162400
      type: int
    stop:
      description: "End, in Unix time."
      returned: success
      sample: 1796162404
      type: int
    system_identifier:
      description: "System identifier of the cluster backed up."
      returned: success
      sample: "7441223371234567890"
      type: str
    type:
      description: "full, diff or incr."
      returned: success
      sample: full
      type: str
  description: "The backup taken, on the host that took it (I(backup))."
  returned: success
  sample:
    label: "20261201-220000F"
    type: full
  type: dict
changes:
  description: "What the task changed, or would change in check mode."
  elements: str
  returned: always
  sample:
  - "switchover from pg1 to pg2"
  type: list
cluster:
  contains:
    config:
      description: "Dynamic configuration."
      returned: success
      sample:
        loop_wait: 10
        ttl: 30
      type: dict
    history:
      description: "Timeline history: timeline, LSN, reason, time, new leader."
      returned: success
      sample:
      - - 1
        - 50331808
        - "no recovery target specified"
        - "2026-12-01T10:00:00+00:00"
        - pg2
      type: list
    leader:
      description: "Leader's name."
      returned: success
      sample: pg1
      type: str
    members:
      description: "Members: name, role, state, host, port, timeline, lag (bytes), pending_restart, tags, restapi, and reachable (false when its REST API did not answer: role and state are then the last ones it published in the DCS)."
      elements: dict
      returned: success
      sample:
      - host: "10.0.0.11"
        lag: null
        name: pg1
        pending_restart: false
        port: 5432
        reachable: true
        restapi: "10.0.0.11:8008"
        role: leader
        state: running
        tags: {}
        timeline: 3
      type: list
    name:
      description: "Patroni scope."
      returned: success
      sample: main
      type: str
    paused:
      description: "Maintenance mode."
      returned: success
      sample: false
      type: bool
    scheduled_switchover:
      description: "A switchover waiting for its time: at, from, to."
      returned: success
      sample:
        at: "2026-12-01T22:00:00+00:00"
        from: pg1
        to: pg2
      type: dict
    sync_standbys:
      description: "Synchronous standbys."
      elements: str
      returned: success
      sample:
      - pg2
      type: list
    system_identifier:
      description: "PostgreSQL system identifier; null for a cluster with no member."
      returned: success
      sample: "7441223371234567890"
      type: str
  description: "The cluster after the task (before it, in check mode)."
  returned: success
  sample:
    leader: pg1
    name: main
    paused: false
  type: dict
"""

ARGUMENT_SPEC = {"argument_spec": {"backup": {"choices": ["full", "diff", "incr"], "type": "str"}, "cluster": {"aliases": ["scope"], "required": True, "type": "str"}, "dynamic_config": {"type": "dict"}, "etcd_password": {"no_log": True, "type": "str"}, "etcd_username": {"type": "str"}, "failover_to": {"type": "str"}, "force": {"default": False, "type": "bool"}, "leader": {"type": "str"}, "maximum_lag": {"type": "int"}, "paused": {"type": "bool"}, "promote": {"default": False, "type": "bool"}, "reinit": {"elements": "str", "type": "list"}, "reload": {"default": False, "type": "bool"}, "restapi": {"type": "str"}, "restapi_password": {"no_log": True, "type": "str"}, "restapi_username": {"type": "str"}, "restart": {"choices": ["pending", "all"], "type": "str"}, "restart_leader_by_switchover": {"default": False, "type": "bool"}, "scheduled_at": {"type": "str"}, "settings": {"type": "raw"}, "state": {"choices": ["present", "info", "absent"], "default": "present", "type": "str"}, "system_identifier": {"type": "str"}, "wait_timeout": {"default": 120, "type": "int"}}, "mutually_exclusive": [["leader", "failover_to", "promote"]], "required_together": [["restapi_username", "restapi_password"], ["etcd_username", "etcd_password"]]}
