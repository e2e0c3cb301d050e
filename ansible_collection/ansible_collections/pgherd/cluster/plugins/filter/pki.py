# Filters of the pki role: the certificates to make (each host's, valid for
# its names and addresses, and each client's), with the subject and the
# openssl extensions of each.
import hashlib
import ipaddress
import os


def pgherd_pki_hosts(hosts, hostvars):
    """[{name, sans}] for each inventory host: its inventory name, its
    ansible_host, and the names in its pki_extra_names."""
    out = []
    for host in hosts:
        hv = hostvars[host]
        sans = [host]
        for name in [hv.get("ansible_host")] + list(hv.get("pki_extra_names") or []):
            if name and str(name) not in sans:
                sans.append(str(name))
        out.append({"name": host, "sans": sans})
    return out


def pgherd_pki_san(names):
    """`IP:10.0.0.1,DNS:db1` for openssl's subjectAltName."""
    parts = []
    for name in names:
        try:
            ipaddress.ip_address(name)
            parts.append("IP:" + name)
        except ValueError:
            parts.append("DNS:" + name)
    return ",".join(parts)


def pgherd_pki_certificates(hosts, clients):
    """[{file, subject, extensions}]: a certificate per host (server and
    client use: etcd's peers, the REST API, PostgreSQL) named after the
    host, and one per client, `client-NAME`, without a CommonName."""
    out = []
    for h in hosts:
        out.append({
            "file": h["name"],
            "subject": "/CN=" + h["name"],
            "extensions": "basicConstraints=CA:FALSE\n"
                          "keyUsage=critical,digitalSignature,keyEncipherment\n"
                          "extendedKeyUsage=serverAuth,clientAuth\n"
                          "subjectAltName=" + pgherd_pki_san(h["sans"]) + "\n",
        })
    for c in clients:
        out.append({
            "file": "client-" + c,
            "subject": "/O=" + c,
            "extensions": "basicConstraints=CA:FALSE\n"
                          "keyUsage=critical,digitalSignature\n"
                          "extendedKeyUsage=clientAuth\n"
                          "subjectAltName=DNS:" + c + "\n",
        })
    return out


def pgherd_pki_stale(stat_results, pki_dir, host):
    """The paths, among the results of a looped stat of a host's copies
    (its CA bundle, `.../ca.pem`, and its certificate), whose content is not
    the PKI directory's: ca.pem, or HOST.pem."""
    stale = []
    for r in stat_results:
        path = r["item"]
        name = "ca.pem" if path.endswith("/ca.pem") else host + ".pem"
        with open(os.path.join(pki_dir, name), "rb") as f:
            want = hashlib.sha1(f.read()).hexdigest()
        if not r["stat"].get("exists") or r["stat"].get("checksum") != want:
            stale.append(path)
    return stale


class FilterModule:
    def filters(self):
        return {
            "pgherd_pki_hosts": pgherd_pki_hosts,
            "pgherd_pki_san": pgherd_pki_san,
            "pgherd_pki_certificates": pgherd_pki_certificates,
            "pgherd_pki_stale": pgherd_pki_stale,
        }
