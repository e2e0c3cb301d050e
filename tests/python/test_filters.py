"""The collection's filter and test plugins that decide what a run writes
and which etcd members join or lead: pure functions, checked as tables."""
import hashlib
import importlib.util
import os
import subprocess
import tempfile
import unittest

PLUGINS = os.path.join(os.path.dirname(__file__), "..", "..", "ansible_collection",
                       "ansible_collections", "pgherd", "cluster", "plugins")


def plugin(kind, name):
    spec = importlib.util.spec_from_file_location("%s_%s" % (kind, name), os.path.join(PLUGINS, kind, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


files = plugin("filter", "files")
apt = plugin("filter", "apt")
etcd_filters = plugin("filter", "etcd")
etcd_tests = plugin("test", "etcd")
members = plugin("filter", "members")
network = plugin("filter", "network")


class VipInterface(unittest.TestCase):
    """The same choice as `pgherd vip` (crates/pgherd-cli/src/vip.rs)."""
    IP_JSON = (
        '[{"ifname":"lo","addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8}]},'
        '{"ifname":"host0","addr_info":[{"family":"inet","local":"10.231.0.11","prefixlen":24},'
        '{"family":"inet","local":"10.231.0.100","prefixlen":24}]},'
        '{"ifname":"eth1","addr_info":[{"family":"inet","local":"192.168.7.2","prefixlen":30}]},'
        '{"ifname":"down0"}]'
    )

    def test_table(self):
        rows = [
            ("10.231.0.100/24", {"interface": "host0", "prefix": 24}),
            ("10.231.0.100", {"interface": "host0", "prefix": 24}),
            ("10.231.0.200/32", {"interface": "host0", "prefix": 32}),
            ("192.168.7.1", {"interface": "eth1", "prefix": 30}),
            ("192.168.7.5", {}),
            ("172.16.0.1/16", {}),
            ("10.231.0/24", {}),
            ("10.231.0.100/33", {}),
        ]
        for address, want in rows:
            self.assertEqual(network.pgherd_vip_interface(self.IP_JSON, address), want, address)

    def test_other_listeners(self):
        lines = [
            'LISTEN 0 4096 0.0.0.0:5000 0.0.0.0:* users:(("haproxy",pid=71,fd=7))',
            'LISTEN 0 5 0.0.0.0:5001 0.0.0.0:* users:(("python3",pid=90,fd=3))',
            "installed: installed",
            "arch: x86_64",
            "missing: /etc/ca.pem",
        ]
        self.assertEqual(network.pgherd_other_listeners(lines, "haproxy"), [lines[1]])
        self.assertEqual(network.pgherd_other_listeners(lines, "python3"), [lines[0]])
        self.assertEqual(network.pgherd_other_listeners(lines[2:], "haproxy"), [])

    def test_valid(self):
        for address, want in [("10.0.0.5", True), ("10.0.0.5/24", True), ("10.0.0.5/0", False),
                              ("fd00::5", False), ("", False), ("10.0.0.5/x", False)]:
            self.assertEqual(network.pgherd_vip_valid(address), want, address)


class MemberAddresses(unittest.TestCase):
    def test_table(self):
        hostvars = {"db1": {"ansible_host": "10.0.0.11"}, "db2": {}, "pg1": {"ansible_host": "127.0.0.11"},
                    "pg2": {"ansible_host": "127.0.0.12"}, "v6": {"ansible_host": "fd00::3"}}
        rows = [
            (["db1", "db2"], ["10.0.0.11", "db2"]),
            (["pg1", "pg2"], ["127.0.0.11", "127.0.0.1", "127.0.0.12"]),
            (["v6", "db1", "db1"], ["fd00::3", "10.0.0.11"]),
            ([], []),
        ]
        for hosts, want in rows:
            self.assertEqual(members.pgherd_member_addresses(hosts, hostvars), want, hosts)


class PgBackRestMembers(unittest.TestCase):
    def test_table(self):
        def node(config, data):
            return {"pg_node": {"changed": False, "instance": {"pgbackrest_config": config, "data_dir": data}}}
        hostvars = {
            "db1": node("/etc/pgbackrest/15-main.conf", "/var/lib/postgresql/15/main"),
            "db2": node("/etc/pgbackrest/15-main.conf", "/srv/pg"),
            "nostanza": {"pg_node": {"instance": {"data_dir": "/d"}}},
            "skipped": {},
            "other": {"result": {"instance": {"pgbackrest_config": "/c", "data_dir": "/d"}}},
        }
        rows = [
            (["db1", "db2"], "pg_node", [
                {"host": "db1", "config": "/etc/pgbackrest/15-main.conf", "path": "/var/lib/postgresql/15/main"},
                {"host": "db2", "config": "/etc/pgbackrest/15-main.conf", "path": "/srv/pg"},
            ]),
            # A member without them (no stanza, not in the run): none at all.
            (["db1", "nostanza"], "pg_node", []),
            (["db1", "skipped"], "pg_node", []),
            (["other"], "result", [{"host": "other", "config": "/c", "path": "/d"}]),
            ([], "pg_node", []),
        ]
        for hosts, result, want in rows:
            self.assertEqual(members.pgherd_pgbackrest_members(hosts, hostvars, result), want, hosts)


class FilesToWrite(unittest.TestCase):
    def test_table(self):
        with tempfile.TemporaryDirectory() as d:
            src = os.path.join(d, "ca.pem")
            with open(src, "w") as f:
                f.write("CA\n")
            sha = hashlib.sha256(b"CA\n").hexdigest()
            item = {"src": src, "dest": "/etc/x/ca.pem", "owner": "etcd", "group": "etcd", "mode": "0644"}
            line = "F\t/etc/x/ca.pem\t%s\tetcd\tetcd\t%s"
            rows = [
                # (what the host holds, written?)
                (line % (sha, "644"), False),
                ("", True),                                   # missing
                (line % ("0" * 64, "644"), True),              # other contents
                (line % (sha, "600"), True),                   # other mode
                ((line % (sha, "644")).replace("etcd\tetcd", "root\tetcd"), True),  # other owner
                ("os debian\njoined\n" + line % (sha, "644"), False),  # other lines ignored
            ]
            for held, written in rows:
                with self.subTest(held=held):
                    self.assertEqual(files.pgherd_files_to_write([item], held) == [item], written)
            missing_src = dict(item, src=os.path.join(d, "none"))
            self.assertEqual(files.pgherd_files_to_write([missing_src], line % (sha, "644")), [missing_src])

    def test_directories_and_content(self):
        directory = {"dest": "/etc/x", "owner": "root", "group": "etcd", "mode": "0750"}
        self.assertEqual(files.pgherd_files_to_write([directory], "F\t/etc/x\t-\troot\tetcd\t750"), [])
        self.assertEqual(files.pgherd_files_to_write([directory], "F\t/etc/x\t-\troot\tetcd\t755"), [directory])
        text = {"dest": "/etc/default/etcd", "content_sha256": files.pgherd_sha256("A=1\n"),
                "owner": "root", "group": "root", "mode": "0644"}
        held = "F\t/etc/default/etcd\t%s\troot\troot\t644" % hashlib.sha256(b"A=1\n").hexdigest()
        self.assertEqual(files.pgherd_files_to_write([text], held), [])

    def test_probe_reports_what_exists(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "f")
            with open(path, "w") as f:
                f.write("x")
            os.chmod(path, 0o600)
            argv = files.pgherd_files_probe([d, path, os.path.join(d, "none")], "echo first $1; shift 1; ", ["one"])
            out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.splitlines()
            self.assertEqual(out[0], "first one")
            self.assertEqual(len(out), 3)
            fields = out[2].split("\t")
            self.assertEqual((fields[1], fields[2], fields[5]), (path, hashlib.sha256(b"x").hexdigest(), "600"))
            self.assertEqual(out[1].split("\t")[2], "-")


class Packages(unittest.TestCase):
    def test_pip_pinned(self):
        rows = [
            ("patroni[etcd3]", "patroni[etcd3]==4.0.11"),
            ("patroni", "patroni==4.0.11"),
            ("Patroni[etcd3,psycopg3]", "Patroni[etcd3,psycopg3]==4.0.11"),
            ("patroni[etcd3]>=4", "patroni[etcd3]>=4"),
            ("psycopg2-binary", "psycopg2-binary"),
            ("patroni-extras", "patroni-extras"),
        ]
        for requirement, pinned in rows:
            with self.subTest(requirement=requirement):
                self.assertEqual(apt.pgherd_pip_pinned(requirement, "patroni", "4.0.11"), pinned)

    def test_missing(self):
        wanted = [{"name": "postgresql-15", "version": "15.8*"}, {"name": "python3-venv", "version": ""}]
        lines = ["os debian", "venv patroni 4.0.11", "createcluster off",
                 "postgresql-15 15.8-0+deb12u1 installed", "python3-venv 3.11.2-1 not-installed"]
        self.assertEqual(apt.pgherd_apt_missing(wanted, lines), ["python3-venv"])


class EtcdMembers(unittest.TestCase):
    def test_members_and_initial_cluster(self):
        hostvars = {
            "e1": {"ansible_host": "10.0.0.1"},
            "e2": {"ansible_host": "10.0.0.2", "etcd_member_name": "east", "etcd_member_state": "absent"},
            "e3": {"etcd_member_address": "fd00::3"},
            "e4": {},
        }
        members = etcd_filters.pgherd_etcd_members(["e1", "e2", "e3", "e4"], hostvars, "https", 2380, 2379)
        self.assertEqual([(m["name"], m["state"]) for m in members],
                         [("e1", "present"), ("east", "absent"), ("e3", "present"), ("e4", "present")])
        self.assertEqual(members[2]["peer_urls"], ["https://[fd00::3]:2380"])
        self.assertEqual(members[3]["client_url"], "https://e4:2379")
        self.assertEqual(etcd_filters.pgherd_etcd_initial_cluster(members[:2]),
                         "e1=https://10.0.0.1:2380,east=https://10.0.0.2:2380")
        self.assertEqual(etcd_filters.pgherd_etcd_membership(members[:1]),
                         [{"name": "e1", "peer_urls": ["https://10.0.0.1:2380"]}])

    def test_leads(self):
        rows = [
            ('[{"Endpoint":"a","Status":{"header":{"member_id":7,"raft_term":2},"leader":7}}]', True),
            ('[{"Endpoint":"a","Status":{"header":{"member_id":7,"raft_term":2},"leader":8}}]', False),
            ("", False),
            ("Error: context deadline exceeded", False),
        ]
        for status, leads in rows:
            with self.subTest(status=status):
                self.assertEqual(etcd_tests.pgherd_etcd_leads(status), leads)


if __name__ == "__main__":
    unittest.main()
