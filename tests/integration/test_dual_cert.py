"""A listener with an RSA and an ECDSA certificate (tls_cert + tls_ecdsa_cert,
like Postfix's smtpd_tls_eccert_file): each client gets the one its cipher
suites / signature algorithms ask for (issue 8: ECDSA halves the handshake
cost, RSA stays for old clients)."""

import ssl
import subprocess

from smtpclient import SMTPClient
from test_foundation import gateway


def rsa_leaf(pki, tmp_path):
    key, csr, crt = (str(tmp_path / n) for n in ("rsa.key", "rsa.csr", "rsa.crt"))
    ext = tmp_path / "ext.cnf"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    subprocess.run(["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-subj", "/CN=localhost", "-out", csr], check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", pki.ca, "-CAkey", pki.ca_key,
                    "-CAcreateserial", "-days", "30", "-extfile", str(ext), "-out", crt],
                   check=True, capture_output=True)
    return crt, key


def served_key_type(port, pki, ciphers):
    c = SMTPClient(port)
    c.reply()
    c.ehlo()
    assert c.cmd("STARTTLS").code == 220
    ctx = ssl.create_default_context(cafile=pki.ca)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(ciphers)
    c.sock = ctx.wrap_socket(c.sock, server_hostname="localhost")
    pem = ssl.DER_cert_to_PEM_cert(c.sock.getpeercert(binary_form=True))
    c.sock.close()
    text = subprocess.run(["openssl", "x509", "-noout", "-text"], input=pem, text=True,
                          capture_output=True, check=True).stdout
    return "rsa" if "rsaEncryption" in text else "ec" if "id-ecPublicKey" in text else text


def test_rsa_and_ecdsa_side_by_side(relay, nexthop, pki, tmp_path):
    crt, key = rsa_leaf(pki, tmp_path)
    nh = nexthop()
    r = relay(gateway(nh.port, tls_cert=crt, tls_key=key, tls_ecdsa_cert=pki.cert,
                      tls_ecdsa_key=pki.key))
    assert served_key_type(r.port, pki, "ECDHE-ECDSA-AES128-GCM-SHA256") == "ec"
    assert served_key_type(r.port, pki, "ECDHE-RSA-AES128-GCM-SHA256") == "rsa"


def test_ecdsa_pair_needs_both_files(relay_bin, tmp_path, pki):
    ini = tmp_path / "r.ini"
    ini.write_text("[listener:in]\nmode = gateway\nlisten = 127.0.0.1:1\nlocal_domains = a.test\n"
                   "next_hop = 127.0.0.1:2\ntls_cert = %s\ntls_key = %s\ntls_ecdsa_cert = %s\n"
                   % (pki.cert, pki.key, pki.cert))
    p = subprocess.run([str(relay_bin), "-t", "-c", str(ini)], capture_output=True, text=True)
    assert p.returncode == 1 and "tls_ecdsa_cert and tls_ecdsa_key go together" in p.stderr
