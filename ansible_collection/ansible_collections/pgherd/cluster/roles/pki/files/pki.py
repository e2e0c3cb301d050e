"""The pki role's work in one process on the controller: the CA, each
certificate made when it is missing, valid for other names, expiring soon,
not signed by the signing CA or issued under another trust bundle, keys
0600; and a CA rotated in three steps (begin, sign, finish).

Reads a JSON document (its argument, or stdin), writes one on stdout: {changed, made,
messages}. With "check": true, says what it would do and writes nothing.

Files in the directory: ca.key, the signing CA's key; ca.pem, the trust
bundle every service is given, whose first certificate is the signing
CA's; during a rotation, ca-next.key and ca-next.pem (after begin) and
ca-retired.key (after sign, until finish); NAME.key, NAME.pem, NAME.ext;
and token signing key pairs, NAME.key and NAME.pub.
"""
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile

PEM = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\n?", re.S)


class Refused(Exception):
    pass


def openssl(*args, cwd=None):
    out = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if out.returncode != 0:
        raise Refused("openssl %s failed: %s" % (args[0], out.stderr.strip()[-400:]))
    return out.stdout


def certs_of(path):
    try:
        with open(path) as f:
            return [c if c.endswith("\n") else c + "\n" for c in PEM.findall(f.read())]
    except FileNotFoundError:
        return []


def write(path, text, mode=0o644):
    """Atomically: a reader sees the old file or the new one."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".pki-")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return None


class Pki:
    def __init__(self, doc):
        self.dir = doc["dir"]
        self.check = doc.get("check", False)
        self.doc = doc
        self.made = []
        self.messages = []

    def path(self, name):
        return os.path.join(self.dir, name)

    def do(self, what, action):
        self.made.append(what)
        if self.check:
            self.messages.append("would " + what)
        else:
            action()

    def new_ca(self, key, cert):
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-keyout", self.path(key), "-out", self.path(cert),
                "-days", str(self.doc["ca_days"]), "-subj", "/CN=" + self.doc["ca_name"],
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        os.chmod(self.path(key), 0o600)

    def directory(self):
        if not os.path.isdir(self.dir):
            self.do("make the directory " + self.dir,
                    lambda: os.makedirs(self.dir, mode=0o700))

    def ca(self):
        if not os.path.exists(self.path("ca.pem")):
            self.do("make the CA", lambda: self.new_ca("ca.key", "ca.pem"))

    def rotation(self, step):
        """One step of a CA rotation; each is idempotent, and one given out
        of order is refused before anything is written."""
        bundle = certs_of(self.path("ca.pem"))
        nxt = os.path.exists(self.path("ca-next.pem"))
        if step == "begin":
            if len(bundle) > 1 and not nxt:
                raise Refused("pki_ca_rotation=begin: a rotation is under way, its certificates signed "
                              "by the new CA already; finish it first (pki_ca_rotation=finish)")
            if not nxt or bundle != bundle[:1] + certs_of(self.path("ca-next.pem")):
                def begin():
                    if not nxt:
                        self.new_ca("ca-next.key", "ca-next.pem")
                    write(self.path("ca.pem"), "".join(bundle[:1] + certs_of(self.path("ca-next.pem"))))
                self.do("make the next CA (ca-next.pem) and trust it beside the current one (ca.pem)", begin)
        elif step == "sign":
            if nxt:
                def swap():
                    os.replace(self.path("ca.key"), self.path("ca-retired.key"))
                    os.replace(self.path("ca-next.key"), self.path("ca.key"))
                    write(self.path("ca.pem"), "".join(certs_of(self.path("ca-next.pem")) + bundle[:1]))
                    os.remove(self.path("ca-next.pem"))
                self.do("sign with the next CA, trusting the current one still (ca.pem)", swap)
            elif len(bundle) < 2:
                raise Refused("pki_ca_rotation=sign: no rotation begun (no ca-next.pem in %s); "
                              "begin it first (pki_ca_rotation=begin)" % self.dir)
        elif step == "finish":
            if nxt:
                raise Refused("pki_ca_rotation=finish: the next CA signs nothing yet; "
                              "sign with it first (pki_ca_rotation=sign)")
            if len(bundle) > 1 or os.path.exists(self.path("ca-retired.key")):
                def finish():
                    write(self.path("ca.pem"), bundle[0])
                    if os.path.exists(self.path("ca-retired.key")):
                        os.remove(self.path("ca-retired.key"))
                self.do("trust the signing CA only (ca.pem)", finish)
        elif step:
            raise Refused("pki_ca_rotation: begin, sign or finish, not %r" % step)

    def signing_ok(self, pem):
        """Whether NAME.pem is signed by the signing CA, the first of ca.pem."""
        bundle = certs_of(self.path("ca.pem"))
        if not bundle:
            return False
        with tempfile.NamedTemporaryFile("w", dir=self.dir, prefix=".pki-", suffix=".pem") as ca:
            ca.write(bundle[0])
            ca.flush()
            out = subprocess.run(["openssl", "verify", "-CAfile", ca.name, pem], capture_output=True)
            return out.returncode == 0

    def certificate(self, c):
        name = c["file"]
        key, pem, ext = (self.path(name + s) for s in (".key", ".pem", ".ext"))
        # The trust bundle's digest in the extensions file: a certificate is
        # made again whenever the bundle changes, so that every service
        # reloads its certificates and, with them, the bundle.
        trust = hashlib.sha256((read(self.path("ca.pem")) or "").encode()).hexdigest()
        extensions = "# issued under the trust bundle sha256:%s\n%s" % (trust, c["extensions"])
        if not os.path.exists(key):
            def genkey():
                openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key)
                os.chmod(key, 0o600)
            self.do("make %s.key" % name, genkey)
        why = None
        if not os.path.exists(pem):
            why = "none yet"
        elif read(ext) != extensions:
            why = "names or trust bundle changed"
        elif subprocess.run(["openssl", "x509", "-noout", "-checkend",
                             str(int(self.doc["renew_days"]) * 86400), "-in", pem],
                            capture_output=True).returncode != 0:
            why = "expires within %s days" % self.doc["renew_days"]
        elif not self.signing_ok(pem):
            why = "not signed by the signing CA"
        if why:
            def make():
                write(ext, extensions)
                csr = self.path(name + ".csr")
                openssl("req", "-new", "-key", key, "-subj", c["subject"], "-out", csr)
                bundle = certs_of(self.path("ca.pem"))
                with tempfile.NamedTemporaryFile("w", dir=self.dir, prefix=".pki-", suffix=".pem") as ca:
                    ca.write(bundle[0])
                    ca.flush()
                    openssl("x509", "-req", "-in", csr, "-CA", ca.name, "-CAkey", self.path("ca.key"),
                            "-CAcreateserial", "-CAserial", self.path("ca.srl"),
                            "-days", str(self.doc["cert_days"]), "-extfile", ext, "-out", pem + ".new")
                os.chmod(pem + ".new", 0o644)
                os.replace(pem + ".new", pem)
                os.remove(csr)
            self.do("make %s.pem (%s)" % (name, why), make)

    def token_key(self, name):
        """A key pair that signs tokens (etcd's JWT authentication tokens,
        verified by every member alike): NAME.key, 0600, and NAME.pub."""
        key, pub = self.path(name + ".key"), self.path(name + ".pub")
        if not os.path.exists(key) or not os.path.exists(pub):
            def make():
                if not os.path.exists(key):
                    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key)
                    os.chmod(key, 0o600)
                write(pub, openssl("pkey", "-in", key, "-pubout"))
            self.do("make the token signing key %s.key" % name, make)

    def key_modes(self):
        for c in [{"file": "ca"}] + self.doc["certificates"] + [{"file": n} for n in self.doc.get("token_keys", [])]:
            key = self.path(c["file"] + ".key")
            if os.path.exists(key) and os.stat(key).st_mode & 0o777 != 0o600:
                self.do("make %s.key 0600" % c["file"], lambda k=key: os.chmod(k, 0o600))


def main():
    doc = json.loads(sys.argv[1]) if len(sys.argv) > 1 else json.load(sys.stdin)
    pki = Pki(doc)
    try:
        if os.path.exists(pki.path("ca.pem")) and not certs_of(pki.path("ca.pem")):
            raise Refused("%s holds no certificate: restore it, or move the directory away to "
                          "make a new CA" % pki.path("ca.pem"))
        if doc.get("rotation") and not os.path.exists(pki.path("ca.pem")):
            raise Refused("pki_ca_rotation=%s: no CA in %s to rotate" % (doc["rotation"], pki.dir))
        pki.directory()
        pki.ca()
        pki.rotation(doc.get("rotation") or "")
        if pki.check and pki.made:
            # A new CA or trust bundle: every certificate is made again.
            for c in doc["certificates"]:
                pki.do("make %s.pem (the CA or trust bundle changes)" % c["file"], None)
        else:
            for c in doc["certificates"]:
                pki.certificate(c)
            for name in doc.get("token_keys", []):
                pki.token_key(name)
            pki.key_modes()
    except Refused as e:
        json.dump({"failed": True, "msg": str(e), "changed": bool(pki.made) and not pki.check,
                   "made": pki.made}, sys.stdout)
        return 1
    json.dump({"changed": bool(pki.made), "made": pki.made, "messages": pki.messages}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
