"""Partitions through an iptables chain of our own, on the loopback addresses of the nodes.

Layout (``iptables -S``)::

    -N RAFTMEM-JEPSEN
    -A INPUT -d 127.0.0.11/32 -i lo -j RAFTMEM-JEPSEN     one jump per node address
    -A RAFTMEM-JEPSEN -s 127.0.0.12/32 -d 127.0.0.11/32 -j DROP   one rule per cut pair

Only packets *to* a node address on ``lo`` ever enter the chain, and the chain
holds only DROP rules between node addresses, so nothing else on the machine
(ssh, the clients, whose source address is 127.0.0.1) is touched. Drops happen
in INPUT, not OUTPUT: a packet dropped in OUTPUT fails the sender's
``send()`` with EPERM at once, which no real network does; dropped in INPUT it
vanishes silently, like a cut cable. Healing flushes the chain; teardown
deletes the jumps and the chain, and also removes any leftovers of a run that
died without cleaning up (found by listing INPUT for jumps to the chain).

Command construction is pure (tested without root); `Iptables` runs them.
"""

from __future__ import annotations

import ipaddress
import os
import shlex
import shutil
import subprocess

CHAIN = "RAFTMEM-JEPSEN"
DEFAULT_ADDRESS_BASE = "127.0.0.11"

Argv = list[str]


def chain_for(address_base: str = DEFAULT_ADDRESS_BASE) -> str:
    """The chain of the run whose nodes start at `address_base`.

    Runs with different address bases use different chains, so they can run at
    the same time without touching each other's rules: ``RAFTMEM-JEPSEN`` for the
    default base, ``RAFTMEM-J-31`` for 127.0.0.31, ``RAFTMEM-J-127-0-1-31`` for a
    base outside 127.0.0.0/24 (chain names are at most 28 characters).
    """
    addr = ipaddress.IPv4Address(address_base)
    if str(addr) == DEFAULT_ADDRESS_BASE:
        return CHAIN
    octets = str(addr).split(".")
    if octets[:3] == ["127", "0", "0"]:
        return f"RAFTMEM-J-{octets[3]}"
    return "RAFTMEM-J-" + "-".join(octets)


def _ip(addr: str) -> str:
    return addr if "/" in addr else f"{addr}/32"


def jump_rule(addr: str, chain: str = CHAIN) -> Argv:
    """The match part of the INPUT rule that sends packets to `addr` into our chain."""
    return ["INPUT", "-i", "lo", "-d", _ip(addr), "-j", chain]


def install_commands(addrs: list[str], chain: str = CHAIN) -> list[Argv]:
    """Create the (empty) chain and jump to it for each node address."""
    cmds: list[Argv] = [["-w", "-N", chain]]
    for addr in addrs:
        cmds.append(["-w", "-I", *jump_rule(addr, chain)])
    return cmds


def cut_commands(pairs: list[tuple[str, str]], chain: str = CHAIN) -> list[Argv]:
    """DROP packets from src to dst for each (src address, dst address) pair."""
    return [["-w", "-A", chain, "-s", _ip(src), "-d", _ip(dst), "-j", "DROP"] for src, dst in pairs]


def heal_commands(chain: str = CHAIN) -> list[Argv]:
    return [["-w", "-F", chain]]


def stale_jump_deletions(listing: str, chain: str = CHAIN) -> list[Argv]:
    """`-D` commands for every rule in an ``iptables -S INPUT`` listing that jumps to `chain`."""
    cmds: list[Argv] = []
    for line in listing.splitlines():
        words = shlex.split(line)
        if len(words) >= 2 and words[0] == "-A" and "-j" in words:
            target = words[words.index("-j") + 1] if words.index("-j") + 1 < len(words) else ""
            if target == chain:
                cmds.append(["-w", "-D", *words[1:]])
    return cmds


def remove_chain_commands(chain: str = CHAIN) -> list[Argv]:
    """Flush and delete the chain (after the jumps to it are gone)."""
    return [["-w", "-F", chain], ["-w", "-X", chain]]


class IptablesError(RuntimeError):
    pass


class Iptables:
    """Runs the commands above. Every method is idempotent enough to call at any time."""

    def __init__(self, addrs: list[str], chain: str = CHAIN, binary: str = "iptables") -> None:
        self.addrs = addrs
        self.chain = chain
        self.binary = binary
        self.installed = False
        self.log: list[str] = []  # every command run, for results.json

    @staticmethod
    def available(binary: str = "iptables") -> str | None:
        """None if we can use iptables, else why not."""
        if os.geteuid() != 0:
            return "not running as root"
        if shutil.which(binary) is None:
            return f"{binary} not found (apt-get install -y iptables)"
        return None

    def _run(self, argv: Argv, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [self.binary, *argv]
        self.log.append(shlex.join(cmd))
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
        if check and proc.returncode != 0:
            raise IptablesError(
                f"{shlex.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}"
            )
        return proc

    def install(self) -> None:
        self.remove()  # leftovers of a run that died without cleaning up
        for argv in install_commands(self.addrs, self.chain):
            self._run(argv)
        self.installed = True

    def cut(self, pairs: list[tuple[str, str]]) -> None:
        for argv in cut_commands(pairs, self.chain):
            self._run(argv)

    def heal(self) -> None:
        for argv in heal_commands(self.chain):
            self._run(argv, check=False)

    def remove(self) -> None:
        """Delete every jump to the chain, then the chain. Never raises for a missing chain."""
        listing = self._run(["-w", "-S", "INPUT"], check=False).stdout
        for argv in stale_jump_deletions(listing, self.chain):
            self._run(argv, check=False)
        for argv in remove_chain_commands(self.chain):
            self._run(argv, check=False)
        self.installed = False

    def rules(self) -> str:
        """The chain's current rules (``iptables -S CHAIN``), empty if it does not exist."""
        proc = self._run(["-w", "-S", self.chain], check=False)
        return proc.stdout if proc.returncode == 0 else ""
