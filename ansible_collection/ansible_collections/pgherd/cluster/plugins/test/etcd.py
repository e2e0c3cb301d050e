# Tests of the etcd_member role.
import json


def pgherd_etcd_leads(status):
    """Whether `etcdctl endpoint status -w json`'s output (text) says the
    endpoint it asked leads its cluster: its own member_id is its leader."""
    try:
        seen = json.loads(status)[0]["Status"]
        return seen["header"]["member_id"] == seen["leader"]
    except (ValueError, KeyError, IndexError, TypeError):
        return False


class TestModule:
    def tests(self):
        return {"pgherd_etcd_leads": pgherd_etcd_leads}
