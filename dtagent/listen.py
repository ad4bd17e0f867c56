"""The listen address setting (``HOST:PORT`` or ``[V6]:PORT``): checked by the config
loader and used by the HTTP server, so it lives below both."""

from __future__ import annotations


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` → (host, port); raises ValueError naming the problem."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{value!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{value!r}: write an IPv6 address in brackets, like [::1]:9718")
    # isdigit() alone is true for other scripts' digits ("١٢٣٤"), which int() reads.
    if not (port_text.isascii() and port_text.isdigit()) or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{value!r}: port must be a number from 0 to 65535 in ASCII digits")
    return host, int(port_text)
