"""PII redaction: e-mail addresses and public IP addresses become stable placeholders.

Placeholders are constant strings (`<EMAIL>`, `<IP_ADDRESS>`), so the same input always gives the
same bytes. Only globally routable IPs are redacted (private, loopback and documentation ranges
and version-number look-alikes such as 1.2.3 stay), as in FineWeb's PII formatter.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from data_pipeline.document import Document
from data_pipeline.steps.base import Step, register

EMAIL_RE = re.compile(r"\b[A-Za-z0-9._%+\-]+@(?:[A-Za-z0-9\-]+\.)+[A-Za-z]{2,}\b")
IPV4_RE = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.]*\d)")
IPV6_RE = re.compile(r"(?<![\w:])(?=[0-9A-Fa-f:]*:[0-9A-Fa-f]*:)[0-9A-Fa-f:]{3,39}(?![\w:])")  # validated by ipaddress


@register("pii")
class PII(Step):
    @dataclass
    class Params:
        emails: bool = True  # redact e-mail addresses
        ips: bool = True  # redact globally routable IPv4/IPv6 addresses
        email_placeholder: str = "<EMAIL>"  # text that replaces each e-mail address
        ip_placeholder: str = "<IP_ADDRESS>"  # text that replaces each IP address

    def _ip(self, match: re.Match) -> str:
        try:
            ip = ipaddress.ip_address(match.group(0))
        except ValueError:
            return match.group(0)
        if not ip.is_global:
            return match.group(0)
        self.stats.edits["ip_redacted"] += 1
        return self.params.ip_placeholder

    def _email(self, match: re.Match) -> str:
        self.stats.edits["email_redacted"] += 1
        return self.params.email_placeholder

    def process(self, doc: Document):
        text = doc.text
        if self.params.emails and "@" in text:
            text = EMAIL_RE.sub(self._email, text)
        if self.params.ips:
            text = IPV4_RE.sub(self._ip, text)
            if "::" in text or text.count(":") >= 2:
                text = IPV6_RE.sub(self._ip, text)
        doc.text = text
        return None
