# Generated from the module's argument spec (crates/pgherd-modules); do not edit.
# pgherd.cluster.instance is a native executable (bin/instance, linked as plugins/modules/instance);
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
- "Writes the Patroni configuration of one node from the site settings and the task's options, and brings the node to the requested state."
- "With C(state=started), Patroni bootstraps the cluster or clones the node from the leader, as the DCS says, and the task waits until the node leads or streams."
- "A configuration change on a running node reloads Patroni and reports the parameters that wait for a restart."
module: instance
notes:
- "Runs as root (Patroni and PostgreSQL then run as the settings' C(sysuser)) or as that user through become."
- "The site settings (option I(settings)): every key, its default and the C({version}) and C({name}) placeholders of paths are described in the collection's C(docs/settings.md)."
- "Before anything is written, the module checks the programs the settings name (Patroni, PostgreSQL's bin directory, pgBackRest) and that every directory can be made and written by whoever writes it, and fails naming the setting and the path."
- "The module is a native executable built for the controller's architecture; see the collection README to build for other targets."
options:
  conf_settings:
    description:
    - "Mapping merged last into the Patroni configuration file; a null value deletes the key."
    type: dict
  dynamic_conf_settings:
    description:
    - "Mapping merged into C(bootstrap.dcs), the dynamic configuration a new cluster starts with; null deletes."
    type: dict
  force:
    default: false
    description:
    - "With I(state=absent): remove a member that leads the cluster's other members (they fail over once its leader key expires), or the synchronous standby no other member can replace. Without it, both are refused before anything is changed: switch over first."
    type: bool
  member_addresses:
    description:
    - "Where the cluster's members connect from: IP addresses, CIDR blocks or host names. The replication and pg_rewind roles are let in from these only (the built-in pg_hba template; a custom one gets them as C(member_addresses)). Not given, from anywhere. On one machine, members connect from 127.0.0.1."
    elements: str
    type: list
  name:
    description:
    - "Instance name: letters, digits, C(-) and C(_)."
    required: true
    type: str
  parameters:
    description:
    - "PostgreSQL parameters of this node (Patroni's local C(postgresql.parameters))."
    type: dict
  patroni:
    description:
    - "Patroni options of this node."
    suboptions:
      cluster:
        description:
        - "The cluster (Patroni's C(scope)) this node belongs to. Defaults to I(name)."
        type: str
      etcd:
        description:
        - "etcd credentials; they take precedence over the settings' ones."
        suboptions:
          password:
            description:
            - "Its password."
            no_log: true
            type: str
          username:
            description:
            - "etcd user of this node's Patroni."
            type: str
        type: dict
      node:
        description:
        - "This member's name in the cluster. Defaults to the short host name."
        type: str
      postgresql:
        description:
        - "How PostgreSQL is reached."
        suboptions:
          connect_host:
            description:
            - "Host other members use to reach this PostgreSQL. Defaults to the host name."
            type: str
          listen:
            description:
            - "Addresses PostgreSQL listens on, comma separated, without port. Defaults to I(connect_host)."
            type: str
        type: dict
      restapi:
        description:
        - "Patroni's REST API on this node."
        suboptions:
          authentication:
            description:
            - "Basic authentication of the REST API."
            suboptions:
              password:
                description:
                - "Its password."
                no_log: true
                type: str
              username:
                description:
                - "User for basic authentication on the REST API's unsafe endpoints."
                type: str
            type: dict
          connect_address:
            description:
            - "C(host:port) other members and clients use to reach the REST API. Defaults to I(patroni.postgresql.connect_host) on port 8008."
            type: str
          listen:
            description:
            - "C(host:port) the REST API binds to. Defaults to I(connect_address)."
            type: str
        type: dict
      tags:
        description:
        - "Patroni's tags of this member. Changed on a running node, Patroni reloads and the task returns once its REST API and the DCS publish them. A tag not given keeps Patroni's default."
        suboptions:
          clonefrom:
            description:
            - "New replicas may clone from this member rather than from the leader."
            type: bool
          failover_priority:
            description:
            - "Patroni 3.2 and later: among members equally ahead, a failover promotes the highest priority; 0 never promotes. Given with I(nofailover), the two must agree."
            type: int
          nofailover:
            description:
            - "Never promote this member (the C(patroni) module's switchover and failover refuse it as target)."
            type: bool
          noloadbalance:
            description:
            - "The REST API's C(/replica) answers 503: load balancers send no reads here."
            type: bool
          nostream:
            description:
            - "Patroni 4 and later: no streaming replication, WAL only from the archive (C(restore_command))."
            type: bool
          nosync:
            description:
            - "Never a synchronous standby."
            type: bool
          replicatefrom:
            description:
            - "Stream from this member (cascading replication) instead of the leader; Patroni falls back to the leader while that member does not run. Refused when it names this node, a cycle, or (on a member already in the cluster) a name the DCS does not list."
            type: str
        type: dict
    type: dict
  pg_hba:
    description:
    - "Extra pg_hba.conf lines, placed before the generated remote entries."
    elements: str
    type: list
  pgbackrest:
    description:
    - "Backups with pgBackRest, in the repository the settings' C(pgbackrest) names. The module writes the instance's pgBackRest configuration, archives WAL (C(archive_mode), C(archive_command)), fetches missing WAL from the repository (C(restore_command)), builds replicas from the newest backup before C(basebackup), and creates the stanza on the leader, then checks archiving."
    suboptions:
      new_repository:
        default: false
        description:
        - "Accept that the stanza's repository changes to the settings' C(pgbackrest.repository.path). Without it, an instance that archives to another repository is refused, naming both paths: a new repository starts a new stanza, and the old one's backups and WAL are no longer used."
        type: bool
      stanza:
        description:
        - "The stanza: the cluster's backups and WAL archive in the repository. Every member of a cluster names the same one."
        required: true
        type: str
    type: dict
  port:
    default: 5432
    description:
    - "TCP port of PostgreSQL."
    type: int
  replrole_password:
    description:
    - "Password of the replication role."
    no_log: true
    type: str
  restart_outdated:
    choices:
    - patroni
    - postgresql
    default: []
    description:
    - "A minor upgrade on a running node: restart the programs named here that run another version than the one installed (new packages). C(patroni): Patroni alone, PostgreSQL kept running; refused unless the cluster is paused (the C(patroni) module's I(paused)), since an unpaused Patroni stops PostgreSQL with it. C(postgresql): PostgreSQL restarted through Patroni; on the leader that is a short outage, so switch over first. Each restart is confirmed: Patroni answers with the installed version, the node leads or streams, and Patroni reports the installed PostgreSQL running. A node that runs what is installed changes nothing; the facts' C(versions) and C(outdated) show what runs. C(playbooks/rolling-upgrade.yml) runs the whole sequence."
    elements: str
    type: list
  restore:
    description:
    - "Restore this node, with I(state=started). An operation: it restores at every run, so keep it out of the playbooks that deploy; C(playbooks/restore.yml) runs the whole sequence on a cluster."
    suboptions:
      from:
        choices:
        - backup
        - leader
        description:
        - "C(backup): this node is rebuilt from the repository and leads the restored cluster; every other member must be stopped, and the cluster's state is removed from the DCS (guarded by the backup's system identifier). C(leader): this node's data is removed and copied again from the running leader."
        required: true
        type: str
      set:
        description:
        - "The backup to restore (its label); the newest when not given."
        type: str
      target:
        description:
        - "How far archived WAL is replayed: C(latest) (the default), C(immediate) (the end of the backup), or an ISO 8601 time with offset (point-in-time recovery)."
        type: str
    type: dict
  rewind_password:
    description:
    - "Password of the pg_rewind role."
    no_log: true
    type: str
  settings:
    description:
    - "Site settings: the path of a YAML file, or the settings as a mapping."
    - "When not given, C(/etc/pgherd/settings.yaml) is read if it exists, else built-in defaults apply."
    type: raw
  settings_file:
    description:
    - "Also keep the settings given inline (I(settings) as a mapping) in this file, mode 0600, for what reads them from a file: the C(pgherd) command, and tasks whose I(settings) names it. Written like the node's other files (check mode and diff, secrets masked); no service is reloaded for it; I(state=absent) leaves it."
    type: path
  standby_cluster:
    description:
    - "Make a new cluster a standby cluster (disaster recovery): its leader, the standby leader, follows this primary cluster, and its members follow the standby leader. Written into C(bootstrap.dcs): it shapes a cluster that does not exist yet; a running cluster keeps what its dynamic configuration says (the C(patroni) module's I(promote) ends it). The primary cluster lets the replication role in from this cluster's addresses (its I(member_addresses)). Refused: neither I(host) nor I(restore_command), this node's own address, an invalid slot name, and C(standby_cluster) also in I(dynamic_conf_settings)."
    suboptions:
      create_replica_methods:
        description:
        - "How the standby leader is built: C(basebackup) from the primary (the default), or C(pgbackrest) from the repository."
        elements: str
        type: list
      host:
        description:
        - "The primary cluster's hosts (comma-separated; a read-write one is chosen). Not this node's own address."
        type: str
      port:
        description:
        - "Their PostgreSQL port (5432)."
        type: int
      primary_slot_name:
        description:
        - "A permanent physical slot of the primary cluster (its dynamic configuration's C(slots)) this cluster streams through."
        type: str
      restore_command:
        description:
        - "How WAL that cannot be streamed is fetched (C(pgbackrest --stanza=S archive-get %f \"%p\")); alone, the cluster follows the repository only."
        type: str
    type: dict
  state:
    choices:
    - started
    - stopped
    - restarted
    - absent
    - present
    default: started
    description:
    - "C(present) writes the configuration without starting anything; C(started) also starts Patroni and waits until the node leads or streams; C(stopped) stops Patroni and PostgreSQL; C(restarted) restarts PostgreSQL through Patroni (or starts it); C(absent) stops and removes the configuration, logs and data, and, when the cluster keeps other members, the member's key in the DCS (refused for the leader of other members: see I(force))."
    type: str
  surole_password:
    description:
    - "Password of the PostgreSQL superuser."
    no_log: true
    type: str
  upgrade:
    description:
    - "A major upgrade to I(version), with I(state=started). On the leader: checks first (both majors' programs, the leader leads, no other member runs, no pending restart, one filesystem with room, C(pg_upgrade --check) against the running instance), then the old instance stopped, a new data directory made by the new major's initdb, C(pg_upgrade --link), the cluster's state in the DCS replaced (its dynamic configuration kept), Patroni started on the new major, statistics rebuilt, the old instance removed. A failure before the new cluster's first start brings the old instance back; after it, a new run resumes. On the others: the old instance removed and a new copy of the upgraded leader made. Once done, a run changes nothing. C(playbooks/upgrade.yml) runs the whole sequence."
    suboptions:
      from:
        description:
        - "The major the instance runs now (older than I(version)): its instance of the same I(name) on this host is upgraded."
        required: true
        type: str
      leader:
        description:
        - "The member upgraded in place with C(pg_upgrade --link) (the cluster's leader); the other members are copied again from it once it runs."
        required: true
        type: str
    type: dict
  version:
    description:
    - "PostgreSQL major version. Defaults to the settings' C(postgresql.default_version)."
    type: str
  wait_timeout:
    default: 300
    description:
    - "Seconds to wait for the node to run (leader, or replica streaming) or to stop. On timeout the task fails with the last Patroni state seen and the last lines of the logs."
    type: int
requirements:
- "PostgreSQL's server programs for the instance's version (Debian: C(postgresql-VERSION))."
- "Patroni with etcd3 support (Debian: C(patroni) and C(python3-etcd3), or a virtualenv with C(patroni[etcd3]))."
- "An etcd cluster (v3 API) reachable from the host."
- "pgBackRest, for I(pgbackrest) and I(restore)."
seealso:
- module: pgherd.cluster.patroni
- description: "What the module writes, and what conf_settings can override."
  link: "https://patroni.readthedocs.io/en/latest/yaml_configuration.html"
  name: "Patroni's YAML configuration"
short_description: "A PostgreSQL instance managed by Patroni on the target host"
version_added: "0.1.0"
"""

EXAMPLES = r"""
- name: PostgreSQL 15 node managed by Patroni, started (bootstraps or clones)
  pgherd.cluster.instance:
    name: main
    version: "15"
    surole_password: "{{ vault_surole_password }}"
    replrole_password: "{{ vault_replrole_password }}"
    rewind_password: "{{ vault_rewind_password }}"
    patroni:
      cluster: main
      node: "{{ inventory_hostname }}"
      restapi:
        connect_address: "{{ ansible_host }}:8008"
      postgresql:
        connect_host: "{{ ansible_host }}"
  register: node

- name: Change parameters; node.instance.pending_restart says if a restart is due
  pgherd.cluster.instance:
    name: main
    parameters:
      work_mem: 16MB
      shared_buffers: 256MB
    surole_password: "{{ vault_surole_password }}"
    replrole_password: "{{ vault_replrole_password }}"
    rewind_password: "{{ vault_rewind_password }}"
    patroni:
      cluster: main
      node: "{{ inventory_hostname }}"
      restapi:
        connect_address: "{{ ansible_host }}:8008"
      postgresql:
        connect_host: "{{ ansible_host }}"
  register: node

- name: After new packages, restart what runs an older version (Patroni alone needs the cluster paused)
  pgherd.cluster.instance:
    name: main
    restart_outdated: [patroni, postgresql]
    surole_password: "{{ vault_surole_password }}"
    replrole_password: "{{ vault_replrole_password }}"
    rewind_password: "{{ vault_rewind_password }}"
    patroni:
      cluster: main
      node: "{{ inventory_hostname }}"
      restapi:
        connect_address: "{{ ansible_host }}:8008"
      postgresql:
        connect_host: "{{ ansible_host }}"

- name: Stop the node (Patroni and PostgreSQL)
  pgherd.cluster.instance:
    name: main
    state: stopped
    parameters:
      work_mem: 16MB
      shared_buffers: 256MB
    surole_password: "{{ vault_surole_password }}"
    replrole_password: "{{ vault_replrole_password }}"
    rewind_password: "{{ vault_rewind_password }}"
    patroni:
      cluster: main
      node: "{{ inventory_hostname }}"
      restapi:
        connect_address: "{{ ansible_host }}:8008"
      postgresql:
        connect_host: "{{ ansible_host }}"

- name: Remove the node, its configuration and data (the DCS is left alone)
  pgherd.cluster.instance:
    name: main
    state: absent
    patroni:
      cluster: main
"""

RETURN = r"""
changes:
  description: "What the task changed, or would change in check mode."
  elements: str
  returned: always
  sample:
  - "create /etc/patroni/15-main.yaml"
  - "start Patroni (15-main (pg1))"
  type: list
instance:
  contains:
    backups:
      contains:
        archiving_fails:
          description: "The last attempt to archive failed, and none succeeded since (a warning says more)."
          returned: success
          sample: false
          type: bool
        last_archived_age:
          description: "Seconds since it was archived, or null."
          returned: success
          sample: 12
          type: int
        last_archived_wal:
          description: "The newest WAL segment archived (pg_stat_archiver), or null."
          returned: success
          sample: "000000010000000000000009"
          type: str
        newest_backup:
          description: "The newest backup (C(label), C(type), C(start), C(stop), C(size), C(repository_size), C(system_identifier)), or null."
          returned: success
          sample:
            label: "20261205-010000F"
            type: full
          type: dict
        newest_backup_age:
          description: "Seconds since the newest backup ended, or null."
          returned: success
          sample: 3600
          type: int
        stanza:
          description: "The stanza."
          returned: success
          sample: main
          type: str
      description: "On the leader, with I(pgbackrest): what a monitoring check compares with the backup schedule."
      returned: success
      sample:
        archiving_fails: false
        last_archived_age: 12
        last_archived_wal: "000000010000000000000009"
        newest_backup_age: 3600
        stanza: main
      type: dict
    cluster:
      description: "Patroni scope."
      returned: success
      sample: main
      type: str
    config:
      description: "Path of the Patroni configuration."
      returned: success
      sample: /etc/patroni/15-main.yaml
      type: str
    data_dir:
      description: "Data directory."
      returned: success
      sample: /var/lib/postgresql/15/main
      type: str
    members:
      description: "Cluster members: name, role, state, host, timeline, lag."
      elements: dict
      returned: success
      sample:
      - host: "10.0.0.11"
        lag: null
        name: pg1
        role: leader
        state: running
        timeline: 3
      type: list
    name:
      description: "Instance name."
      returned: success
      sample: main
      type: str
    node:
      description: "Member name."
      returned: success
      sample: pg1
      type: str
    outdated:
      description: "The programs (C(patroni), C(postgresql)) that run another version than the one installed."
      elements: str
      returned: success
      sample:
      - patroni
      - postgresql
      type: list
    passfile:
      description: "Path of the client password file, when passwords are given."
      returned: success
      sample: /etc/patroni/15-main.pgpass
      type: str
    pending_restart:
      description: "Whether parameters wait for a restart, as Patroni and the DCS report it (the task waits until they agree with PostgreSQL)."
      returned: success
      sample: true
      type: bool
    pending_restart_parameters:
      description: "Those parameters."
      elements: str
      returned: success
      sample:
      - shared_buffers
      type: list
    pgbackrest_config:
      description: "Path of the instance's pgBackRest configuration, with a stanza (what a repository host's C(pgN-host-config) names)."
      returned: success
      sample: /etc/pgbackrest/15-main.conf
      type: str
    port:
      description: "PostgreSQL port."
      returned: success
      sample: 5432
      type: int
    replication_state:
      description: "A replica's replication state (C(streaming) once it streams from its upstream)."
      returned: success
      sample: streaming
      type: str
    restapi:
      description: "host:port of the REST API."
      returned: success
      sample: "10.0.0.11:8008"
      type: str
    role:
      description: "primary or replica, when running."
      returned: success
      sample: replica
      type: str
    running:
      description: "Whether Patroni runs."
      returned: success
      sample: true
      type: bool
    state:
      description: "Patroni's state of PostgreSQL, when running."
      returned: success
      sample: streaming
      type: str
    timeline:
      description: "Current timeline, when running."
      returned: success
      sample: 3
      type: int
    version:
      description: "PostgreSQL major version."
      returned: success
      sample: "15"
      type: str
    versions:
      description: "PostgreSQL's and Patroni's versions, C(running) (as Patroni reports them) and C(installed) (the programs on the host), when Patroni answers."
      returned: success
      sample:
        patroni:
          installed: "4.1.5"
          running: "4.0.11"
        postgresql:
          installed: "15.20"
          running: "15.18"
      type: dict
  description: "The node: where it lives and what Patroni says of it."
  returned: success
  sample:
    name: main
    role: primary
    state: running
    version: "15"
  type: dict
"""

ARGUMENT_SPEC = {"argument_spec": {"conf_settings": {"type": "dict"}, "dynamic_conf_settings": {"type": "dict"}, "force": {"default": False, "type": "bool"}, "member_addresses": {"elements": "str", "type": "list"}, "name": {"required": True, "type": "str"}, "parameters": {"type": "dict"}, "patroni": {"options": {"cluster": {"type": "str"}, "etcd": {"options": {"password": {"no_log": True, "type": "str"}, "username": {"type": "str"}}, "required_together": [["username", "password"]], "type": "dict"}, "node": {"type": "str"}, "postgresql": {"options": {"connect_host": {"type": "str"}, "listen": {"type": "str"}}, "type": "dict"}, "restapi": {"options": {"authentication": {"options": {"password": {"no_log": True, "type": "str"}, "username": {"type": "str"}}, "required_together": [["username", "password"]], "type": "dict"}, "connect_address": {"type": "str"}, "listen": {"type": "str"}}, "type": "dict"}, "tags": {"options": {"clonefrom": {"type": "bool"}, "failover_priority": {"type": "int"}, "nofailover": {"type": "bool"}, "noloadbalance": {"type": "bool"}, "nostream": {"type": "bool"}, "nosync": {"type": "bool"}, "replicatefrom": {"type": "str"}}, "type": "dict"}}, "type": "dict"}, "pg_hba": {"elements": "str", "type": "list"}, "pgbackrest": {"options": {"new_repository": {"default": False, "type": "bool"}, "stanza": {"required": True, "type": "str"}}, "type": "dict"}, "port": {"default": 5432, "type": "int"}, "replrole_password": {"no_log": True, "type": "str"}, "restart_outdated": {"choices": ["patroni", "postgresql"], "default": [], "elements": "str", "type": "list"}, "restore": {"options": {"from": {"choices": ["backup", "leader"], "required": True, "type": "str"}, "set": {"type": "str"}, "target": {"type": "str"}}, "type": "dict"}, "rewind_password": {"no_log": True, "type": "str"}, "settings": {"type": "raw"}, "settings_file": {"type": "path"}, "standby_cluster": {"options": {"create_replica_methods": {"elements": "str", "type": "list"}, "host": {"type": "str"}, "port": {"type": "int"}, "primary_slot_name": {"type": "str"}, "restore_command": {"type": "str"}}, "type": "dict"}, "state": {"choices": ["started", "stopped", "restarted", "absent", "present"], "default": "started", "type": "str"}, "surole_password": {"no_log": True, "type": "str"}, "upgrade": {"options": {"from": {"required": True, "type": "str"}, "leader": {"required": True, "type": "str"}}, "type": "dict"}, "version": {"type": "str"}, "wait_timeout": {"default": 300, "type": "int"}}}
