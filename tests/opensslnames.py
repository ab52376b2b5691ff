"""Subject and issuer as the ``openssl`` binary prints them with ``-nameopt compat`` (OpenSSL's
``X509_NAME_print``, the form CIRCL's passive-SSL answers show): the reference the API's own
rendering is checked against."""

from __future__ import annotations

import subprocess


def openssl_names(der: bytes) -> tuple[str, str]:
    """(subject, issuer) from ``openssl x509 -text -nameopt compat``."""
    out = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-text", "-nameopt",
                          "compat"], input=der, capture_output=True, check=True, timeout=30)
    found: dict[str, str] = {}
    for line in out.stdout.decode("latin-1").splitlines():
        head, sep, rest = line.strip().partition(": ")
        if head in ("Subject", "Issuer") and head not in found:
            found[head] = rest if sep else ""
        elif line.strip() in ("Subject:", "Issuer:"):
            found.setdefault(line.strip()[:-1], "")
    return found["Subject"], found["Issuer"]
