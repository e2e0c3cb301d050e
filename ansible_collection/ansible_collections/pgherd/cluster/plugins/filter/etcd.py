# Filters of the etcd_member role: the members of the etcd cluster as the
# inventory describes them.


def pgherd_etcd_members(hosts, hostvars, scheme, peer_port, client_port):
    """[{host, name, address, peer_urls, client_url, state}] for each host
    of the etcd cluster, from its etcd_member_name, etcd_member_address
    (else ansible_host, else the inventory name) and etcd_member_state."""
    out = []
    for host in hosts:
        hv = hostvars[host]
        address = str(hv.get("etcd_member_address") or hv.get("ansible_host") or host)
        url_host = "[" + address + "]" if ":" in address else address
        out.append({
            "host": host,
            "name": str(hv.get("etcd_member_name") or host),
            "address": address,
            "peer_urls": ["%s://%s:%s" % (scheme, url_host, peer_port)],
            "client_url": "%s://%s:%s" % (scheme, url_host, client_port),
            "state": str(hv.get("etcd_member_state") or "present"),
        })
    return out


def pgherd_etcd_initial_cluster(members):
    """etcd's --initial-cluster: NAME=PEER_URL,... of `members`."""
    return ",".join(m["name"] + "=" + url for m in members for url in m["peer_urls"])


def pgherd_etcd_membership(members):
    """The etcd module's `members`: [{name, peer_urls}] of `members`."""
    return [{"name": m["name"], "peer_urls": m["peer_urls"]} for m in members]


class FilterModule:
    def filters(self):
        return {
            "pgherd_etcd_members": pgherd_etcd_members,
            "pgherd_etcd_initial_cluster": pgherd_etcd_initial_cluster,
            "pgherd_etcd_membership": pgherd_etcd_membership,
        }
