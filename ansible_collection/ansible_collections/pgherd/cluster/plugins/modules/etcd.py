# Generated from the module's argument spec (crates/pgherd-modules); do not edit.
# pgherd.cluster.etcd is a native executable (bin/etcd, linked as plugins/modules/etcd);
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
- "Makes etcd's roles and users as listed (a role per Patroni cluster, limited to the cluster's prefix, is the usual shape), turns authentication on or off, and changes the membership one member at a time."
- "Everything that would be refused (a membership change that loses quorum, a role that does not exist, authentication without root) is refused before the first change."
- "Runs where etcd's client URLs are reachable: on a member, or on the controller."
module: etcd
notes:
- "A Patroni cluster C(main) under the namespace C(/service/) needs C(readwrite) on the prefix C(/service/main/)."
- "Passwords are never shown: a changed one is listed in I(changes), not in the diff."
- "A member added is not started by this module: start etcd on its host with C(initial-cluster-state: existing) and the returned I(etcd.initial_cluster), then run the task again to add the next."
- "The site settings (option I(settings)) are described in the collection's C(docs/settings.md)."
options:
  auth:
    description:
    - "Authentication on (C(true)) or off. Not given: left as it is. Turned on after the roles and users are made, so that root exists."
    type: bool
  cacert:
    description:
    - "CA of etcd's server certificates. Defaults to the settings' C(patroni.etcd.cacert)."
    type: path
  cert:
    description:
    - "Client certificate, when etcd checks them. Defaults to the settings' C(patroni.etcd.cert)."
    type: path
  hosts:
    description:
    - "C(host:port) of etcd's client URLs. Defaults to the settings' C(patroni.etcd.hosts)."
    elements: str
    type: list
  key:
    description:
    - "Its key. Defaults to the settings' C(patroni.etcd.key)."
    type: path
  login_password:
    description:
    - "Its password. With I(login_user) C(root), also the password root is created with when I(auth) turns authentication on and root does not exist."
    no_log: true
    type: str
  login_user:
    default: root
    description:
    - "The user the task logs in as while authentication is on."
    type: str
  members:
    description:
    - "The whole membership: members not listed are removed, one listed and missing is added. Refused when a change would leave fewer healthy members than a quorum, and when more than one member is missing (etcd members join one at a time: add one, start it, then the next)."
    elements: dict
    suboptions:
      name:
        description:
        - "The member's name (etcd's C(--name))."
        required: true
        type: str
      peer_urls:
        description:
        - "Its peer URLs (C(--initial-advertise-peer-urls))."
        elements: str
        required: true
        type: list
    type: list
  protocol:
    choices:
    - http
    - https
    description:
    - "Defaults to the settings' C(patroni.etcd.protocol)."
    type: str
  roles:
    description:
    - "Roles to make as listed (or delete); roles not listed are left alone."
    elements: dict
    suboptions:
      name:
        description:
        - "The role."
        required: true
        type: str
      permissions:
        description:
        - "Its permissions, exactly: those not listed are revoked."
        elements: dict
        suboptions:
          access:
            choices:
            - read
            - write
            - readwrite
            default: readwrite
            description:
            - "What the permission allows."
            type: str
          key:
            description:
            - "The key, or the prefix of the keys, the permission covers."
            required: true
            type: str
          prefix:
            default: true
            description:
            - "Every key that starts with I(key) (C(true)), or I(key) alone."
            type: bool
        type: list
      state:
        choices:
        - present
        - absent
        default: present
        description:
        - "C(absent) deletes the role."
        type: str
    type: list
  settings:
    description:
    - "Site settings: the path of a YAML file, or the settings as a mapping."
    - "When not given, C(/etc/pgherd/settings.yaml) is read if it exists, else built-in defaults apply."
    type: raw
  users:
    description:
    - "Users to make as listed (or delete); users not listed are left alone."
    elements: dict
    suboptions:
      name:
        description:
        - "The user."
        required: true
        type: str
      password:
        description:
        - "Its password. Checked by logging in as the user while authentication is on, and changed when it differs; while authentication is off, set when the user is created. Without it, a new user has no password (it logs in with a client certificate whose common name is the user's name)."
        no_log: true
        type: str
      roles:
        description:
        - "Its roles, exactly: those not listed are revoked. Not given: left as they are."
        elements: str
        type: list
      state:
        choices:
        - present
        - absent
        default: present
        description:
        - "C(absent) deletes the user."
        type: str
    type: list
  wait_timeout:
    default: 30
    description:
    - "Seconds etcd has to answer each call."
    type: int
requirements:
- "etcd 3.4 or later (v3 API), reachable from the host the task runs on."
seealso:
- module: pgherd.cluster.instance
- description: "Users, roles and permissions as etcd has them."
  link: "https://etcd.io/docs/v3.5/op-guide/authentication/rbac/"
  name: "etcd's role-based access control"
- description: "Adding and removing members."
  link: "https://etcd.io/docs/v3.5/op-guide/runtime-configuration/"
  name: "etcd's runtime reconfiguration"
short_description: "etcd's authentication, roles, users and members"
version_added: "0.1.0"
"""

EXAMPLES = r"""
- name: A role and a user for the Patroni cluster main, then authentication on
  pgherd.cluster.etcd:
    # etcd's endpoints and TLS files: the settings' patroni.etcd, or the
    # options hosts, protocol, cacert, cert and key.
    login_password: "{{ etcd_root_password }}"
    auth: true
    roles:
      - name: patroni-main
        permissions:
          - key: /service/main/
    users:
      - name: patroni-main
        password: "{{ patroni_etcd_password }}"
        roles: [patroni-main]

- name: The membership (a list of name and peer_urls); one missing member is added
  pgherd.cluster.etcd:
    login_password: "{{ etcd_root_password }}"
    members: "{{ etcd_members }}"
  register: etcd

- name: Read etcd
  pgherd.cluster.etcd:
    login_password: "{{ etcd_root_password }}"
  register: etcd
"""

RETURN = r"""
changes:
  description: "What the task changed, or would change in check mode."
  elements: str
  returned: always
  sample:
  - "add role patroni-main"
  - "grant readwrite /service/main/* to role patroni-main"
  - "enable authentication"
  type: list
etcd:
  contains:
    authentication:
      description: "C(enabled) or C(disabled)."
      returned: success
      sample: enabled
      type: str
    initial_cluster:
      description: "C(name=peer_url,...) of every member, for etcd's C(--initial-cluster) on a member that joins."
      returned: success
      sample: "etcd1=https://10.0.0.1:2380,etcd2=https://10.0.0.2:2380"
      type: str
    members:
      description: "Members: id (hexadecimal), name (empty while not started), peer_urls, client_urls, learner, healthy."
      elements: dict
      returned: success
      sample:
      - client_urls:
        - "https://10.0.0.1:2379"
        healthy: true
        id: "8e9e05c52164694d"
        learner: false
        name: etcd1
        peer_urls:
        - "https://10.0.0.1:2380"
      type: list
    roles:
      description: "Each role's permissions."
      returned: success
      sample:
        patroni-main:
        - "readwrite /service/main/*"
        root: []
      type: dict
    users:
      description: "Each user's roles."
      returned: success
      sample:
        patroni-main:
        - patroni-main
        root:
        - root
      type: dict
  description: "etcd after the task (before it, in check mode)."
  returned: always
  sample:
    authentication: enabled
  type: dict
"""

ARGUMENT_SPEC = {"argument_spec": {"auth": {"type": "bool"}, "cacert": {"type": "path"}, "cert": {"type": "path"}, "hosts": {"elements": "str", "type": "list"}, "key": {"type": "path"}, "login_password": {"no_log": True, "type": "str"}, "login_user": {"default": "root", "type": "str"}, "members": {"elements": "dict", "options": {"name": {"required": True, "type": "str"}, "peer_urls": {"elements": "str", "required": True, "type": "list"}}, "type": "list"}, "protocol": {"choices": ["http", "https"], "type": "str"}, "roles": {"elements": "dict", "options": {"name": {"required": True, "type": "str"}, "permissions": {"elements": "dict", "options": {"access": {"choices": ["read", "write", "readwrite"], "default": "readwrite", "type": "str"}, "key": {"required": True, "type": "str"}, "prefix": {"default": True, "type": "bool"}}, "type": "list"}, "state": {"choices": ["present", "absent"], "default": "present", "type": "str"}}, "type": "list"}, "settings": {"type": "raw"}, "users": {"elements": "dict", "options": {"name": {"required": True, "type": "str"}, "password": {"no_log": True, "type": "str"}, "roles": {"elements": "str", "type": "list"}, "state": {"choices": ["present", "absent"], "default": "present", "type": "str"}}, "type": "list"}, "wait_timeout": {"default": 30, "type": "int"}}}
