"""Hypothesis strategies for hostile AdmissionReviews, and the check every answer must pass.

A fuzzer that only sends random JSON never gets past ``apiVersion``; one that only tweaks valid
pods never sends garbage. So the strategies start from real reviews (corpus pods, pods with the
mesh's own annotations) and break them the ways a buggy client or an attacker would: a value
of the wrong type anywhere, a field removed, an unknown field or kind, huge strings, deep
nesting, annotation values from a nasty alphabet; plus bodies that are not JSON at all.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import orjson
from hypothesis import strategies as st

from mesh import contract
from tests.support.corpus import admission_review, corpus_pods

Obj = dict[str, Any]
Path = tuple[str | int, ...]

MESH_KEYS = sorted(
    {
        value
        for value in vars(contract).values()
        if isinstance(value, str)
        and value.startswith(contract.OUR_PREFIXES)
        and not value.endswith("/")
    }
    | {contract.INJECT, contract.STATUS}
)
SMALL_POD: Obj = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"generateName": "web-", "labels": {"app": "web"}},
    "spec": {"containers": [{"name": "web", "image": "nginx", "ports": [{"containerPort": 80}]}]},
}
BASE_PODS: list[Obj] = [SMALL_POD, *[pod for _, pod in corpus_pods()][::25]]

# JSON scalars, with the edges: huge and negative numbers, empty and odd strings
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.sampled_from(["", " ", "0", "-1", "true", "null", "Pod", "CREATE", "\x00", "é" * 3]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                max_size=4),
    max_leaves=12,
)
nasty_text = st.one_of(
    st.text(max_size=60),
    st.text(alphabet="0123456789,:-/.*@%msMGKi ", max_size=30),
    st.sampled_from(["-1", "0", "65536", "99999999999999999999", "1e400", "0x10", "1:0",
                     "::/0", "0.0.0.0/0", "300.1.1.1/8", "*", ",,", "1,", "TPROXY", "tproxy",
                     "5xx,nope", "100ms@200", "1.5", "NaN", "inf", "true", "yes",
                     "\uff11\uff12", "\u00b2", "\u0663"]),
    st.integers(min_value=1000, max_value=200_000).map(lambda n: "9" * n),
)


def deep(depth: int) -> orjson.Fragment:
    """JSON nested ``depth`` levels (objects and lists in turn), as text orjson embeds as is:
    orjson refuses to write past 254 levels, and printing a failing example that deep would
    exhaust Python's recursion limit; the receiver parses it all the same."""
    opening = b"".join(b"[" if level % 2 else b'{"a":' for level in range(depth))
    closing = b"".join(b"]" if level % 2 else b"}" for level in reversed(range(depth)))
    return orjson.Fragment(opening + b"1" + closing)


def paths(doc: Any, prefix: Path = ()) -> Iterator[Path]:
    """Every path into ``doc`` (the root excluded), containers before their contents."""
    items: Any = ()
    if isinstance(doc, dict):
        items = doc.items()
    elif isinstance(doc, list):
        items = enumerate(doc)
    for key, value in items:
        yield (*prefix, key)
        yield from paths(value, (*prefix, key))


def _parent(doc: Any, path: Path) -> Any:
    for key in path[:-1]:
        doc = doc[key]
    return doc


@st.composite
def broken_reviews(draw: st.DrawFn) -> Obj:
    """A real review, then one to three changes at random places in it."""
    pod = copy.deepcopy(draw(st.sampled_from(BASE_PODS)))
    if draw(st.booleans()):
        meta = pod.setdefault("metadata", {})
        notes = meta.setdefault("annotations", {})
        for key in draw(st.lists(st.sampled_from(MESH_KEYS), min_size=1, max_size=3)):
            notes[key] = draw(nasty_text)
    doc = admission_review(
        pod,
        namespace=draw(st.sampled_from(["shop", "", "kube-system", "a" * 300])),
        operation=draw(st.sampled_from(["CREATE", "CREATE", "UPDATE", "DELETE", "create"])),
        kind=draw(st.sampled_from(["Pod", "Pod", "Pod", "Service", "Deployment", "Zebra"])),
        uid=draw(st.sampled_from(["u-1", "Ünïcode-uid", "x" * 1000])),
    )
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        where = list(paths(doc))
        inside = [p for p in where if p[:2] == ("request", "object")]
        path = draw(st.sampled_from(inside if inside and draw(st.integers(0, 3)) else where))
        parent, key = _parent(doc, path), path[-1]
        action = draw(st.sampled_from(["replace", "delete", "add", "huge", "deep"]))
        if action == "replace":
            parent[key] = draw(json_values)
        elif action == "delete":
            del parent[key]
        elif action == "add" and isinstance(parent[key], dict):
            parent[key][draw(st.text(max_size=20))] = draw(json_values)
        elif action == "add" and isinstance(parent[key], list):
            parent[key].append(draw(json_values))
        elif action == "huge":
            parent[key] = draw(st.sampled_from(["x", "é", "\u202e", "{"])) * draw(
                st.integers(min_value=10_000, max_value=300_000)
            )
        elif action == "deep":
            parent[key] = deep(draw(st.integers(min_value=2, max_value=1100)))
    return doc


def garbage_bodies() -> st.SearchStrategy[bytes]:
    """Bodies that are not a JSON object: bytes, broken JSON, other JSON types, too-deep JSON."""
    return st.one_of(
        st.binary(max_size=200),
        st.text(max_size=200).map(str.encode),
        json_values.map(orjson.dumps),
        st.integers(min_value=1, max_value=5000).map(lambda n: b"[" * n + b"]" * n),
        st.integers(min_value=1, max_value=5000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
        st.sampled_from([b"", b"{", b'{"apiVersion": NaN}', b"\xef\xbb\xbf{}", b'{"a":1,"a":2}',
                         b"\xff\xfe{\x00}\x00", b'"' + b"x" * 100_000, b"{}" * 1000]),
    )


def check_answer(status: int, body: bytes, sent: Any) -> str:
    """The contract for any body: 400 with a reason, or 200 with a well-formed review answer.

    Returns the decision for statistics: ``bad-request``, ``allowed`` or ``denied``.
    """
    assert status in (200, 400), f"HTTP {status}: {body[:300]!r}"
    answer = orjson.loads(body)
    if status == 400:
        assert isinstance(answer["detail"], str) and answer["detail"], answer
        return "bad-request"
    assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
    response = answer["response"]
    assert response["uid"] == sent["request"]["uid"]
    assert isinstance(response["allowed"], bool)
    if response["allowed"]:
        assert ("patch" in response) == (response.get("patchType") == "JSONPatch")
        return "allowed"
    message = response["status"]["message"]
    assert response["status"]["code"] == 400, f"the injector failed inside: {message[:500]}"
    assert isinstance(message, str) and message
    return "denied"
