# Where a cluster's members connect from, for the instance module's
# member_addresses: each member host's ansible_host (its inventory name
# without one). A connection between two loopback addresses of one machine
# leaves from 127.0.0.1 (Linux picks the loopback interface's primary
# address), so a loopback member brings 127.0.0.1 along.
import ipaddress


def pgherd_member_addresses(hosts, hostvars):
    out = []
    for host in hosts:
        address = str((hostvars.get(host) or {}).get("ansible_host") or host)
        found = [address]
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            ip = None
        if ip is not None and ip.version == 4 and ip.is_loopback:
            found.append("127.0.0.1")
        for a in found:
            if a not in out:
                out.append(a)
    return out


class FilterModule:
    def filters(self):
        return {"pgherd_member_addresses": pgherd_member_addresses}
