"""Query variants: which IOC types a query hunts and which table columns it needs."""

from __future__ import annotations

from dataclasses import dataclass

from foxhunt.catalog import Table
from foxhunt.model import IocType


@dataclass(frozen=True, slots=True, eq=False)  # compared by identity: there is one object per variant
class Variant:
    name: str
    title: str
    ioc_types: tuple[IocType, ...]
    match_type: str  # what a hit of this variant is: exact / subdomain / ip_only

    def applies_to(self, table: Table) -> bool:
        if self.name in ("ip-port", "ip-only"):
            return bool(table.endpoints)
        if self.name == "domain":
            return bool(table.hosts)
        if self.name == "url":
            return bool(table.urls)
        return bool(table.hashes)


IP_PORT = Variant("ip-port", "ip:port (IP and port)", (IocType.IP_PORT,), "exact")
IP_ONLY = Variant("ip-only", "ip:port IOC's IP on another port", (IocType.IP_PORT,), "ip_only")
DOMAIN = Variant("domain", "domain or subdomain", (IocType.DOMAIN,), "exact or subdomain")
URL = Variant("url", "URL", (IocType.URL,), "exact")
HASH = Variant("hash", "file hash", (IocType.MD5, IocType.SHA1, IocType.SHA256), "exact")

VARIANTS = (IP_PORT, IP_ONLY, DOMAIN, URL, HASH)
