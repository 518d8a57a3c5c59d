"""The request path as the inbound proxy compares it with a policy's ``to.paths``.

A path rule is only as good as the path it is compared with: ``/public/..%2Fadmin`` starts with
``/public/`` as written, and is ``/admin`` once the app has decoded and resolved it. So the
inbound HTTP connection manager normalizes every path before any filter sees it
(:data:`mesh.envoy.rbac.HCM_PATH_OPTIONS`), and the app receives the normalized path too: the
RBAC filter and the app see the same one. :func:`normalize` computes that path the same way,
so ``decide`` answers what the proxy enforces. Every step below was measured on Envoy 1.40 with
those options (tests/mesh/test_access_decide.py holds the table):

1. the query string is not part of the path (Envoy's path matcher ignores it);
2. ``%2F`` and ``%5C`` (any case) are unescaped to ``/`` and ``\\`` (``UNESCAPE_AND_FORWARD``);
3. percent-escapes of unreserved characters (letters, digits, ``-._~``) are decoded, all
   others are kept as written (``%20`` stays ``%20``);
4. ``\\`` becomes ``/``;
5. dot segments are removed as RFC 3986 section 5.2.4 says (``/a/../b`` is ``/b``);
6. runs of slashes are merged (``//a//b`` is ``/a/b``).
"""

from __future__ import annotations

import re
import string

_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_SLASHES = re.compile(r"/{2,}")


def _decode_unreserved(match: re.Match[str]) -> str:
    char = chr(int(match.group(1), 16))
    return char if char in _UNRESERVED else match.group(0)


def remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4, on an absolute path."""
    out: list[str] = []
    rest = path
    while rest:
        if rest.startswith("../"):
            rest = rest[3:]
        elif rest.startswith("./") or rest.startswith("/./"):
            rest = rest[2:]
        elif rest == "/.":
            rest = "/"
        elif rest.startswith("/../"):
            rest = rest[3:]
            if out:
                out.pop()
        elif rest == "/..":
            rest = "/"
            if out:
                out.pop()
        elif rest in (".", ".."):
            rest = ""
        else:
            end = rest.find("/", 1)
            segment, rest = (rest, "") if end < 0 else (rest[:end], rest[end:])
            out.append(segment)
    return "".join(out)


def normalize(path: str) -> str:
    """``path`` (as the client sent it, query and all) as the policy sees it."""
    path = path.split("?", 1)[0]
    path = re.sub("%2[Ff]", "/", path)
    path = re.sub("%5[Cc]", "\\\\", path)
    path = _ESCAPE.sub(_decode_unreserved, path)
    path = path.replace("\\", "/")
    path = remove_dot_segments(path)
    return _SLASHES.sub("/", path) or "/"
