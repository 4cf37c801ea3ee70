"""A minimal DNS A-record lookup against one server (no dependency, no system resolver)."""

from __future__ import annotations

import ipaddress
import random
import socket
import struct
from dataclasses import dataclass

TYPE_A = 1
CLASS_IN = 1
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


@dataclass(frozen=True)
class Answer:
    rcode: str
    addresses: tuple[str, ...]


def build_query(name: str, query_id: int) -> bytes:
    header = struct.pack("!HHHHHH", query_id, 0x0100, 1, 0, 0, 0)  # recursion desired
    labels = b"".join(
        bytes([len(label)]) + label.encode("ascii") for label in name.rstrip(".").split(".")
    )
    return header + labels + b"\0" + struct.pack("!HH", TYPE_A, CLASS_IN)


def _skip_name(message: bytes, offset: int) -> int:
    while True:
        length = message[offset]
        if length & 0xC0 == 0xC0:  # compression pointer ends the name
            return offset + 2
        if length == 0:
            return offset + 1
        offset += 1 + length


def parse_response(message: bytes, query_id: int) -> Answer:
    response_id, flags, questions, answers, _, _ = struct.unpack("!HHHHHH", message[:12])
    if response_id != query_id:
        raise ValueError(f"response id {response_id} does not match query id {query_id}")
    offset = 12
    for _ in range(questions):
        offset = _skip_name(message, offset) + 4
    addresses = []
    for _ in range(answers):
        offset = _skip_name(message, offset)
        record_type, _, _, length = struct.unpack("!HHIH", message[offset : offset + 10])
        offset += 10
        if record_type == TYPE_A and length == 4:
            addresses.append(str(ipaddress.IPv4Address(message[offset : offset + 4])))
        offset += length
    return Answer(RCODES.get(flags & 0xF, str(flags & 0xF)), tuple(addresses))


def query_a(name: str, server: str, port: int = 53, timeout: float = 2.0) -> Answer:
    query_id = random.randrange(1 << 16)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.settimeout(timeout)
        udp.sendto(build_query(name, query_id), (server, port))
        message, _ = udp.recvfrom(4096)
    return parse_response(message, query_id)
