"""The AccessPolicy CRD's schema and meshinject's parser agree: every example the tests and the
docs use is accepted by both, every malformed policy is refused by the parser, and the ones the
OpenAPI schema alone can refuse are refused by a JSON-schema validator too."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
import yaml

from mesh.access import parse_policy
from mesh.contract import ACCESS_POLICY_GROUP
from mesh.errors import PolicyError
from tests.support.accesspolicies import EXAMPLES, MALFORMED, Obj, docs_examples
from tests.support.paths import MANIFESTS

CRD = yaml.safe_load((MANIFESTS / "base" / "accesspolicy.yaml").read_text())


def _schema() -> dict[str, Any]:
    (version,) = CRD["spec"]["versions"]
    return dict(version["schema"]["openAPIV3Schema"])


VALIDATOR = jsonschema.Draft7Validator(_schema())


def test_the_crd_names_the_group_the_control_plane_watches() -> None:
    assert CRD["spec"]["group"] == ACCESS_POLICY_GROUP
    assert CRD["metadata"]["name"] == f"accesspolicies.{ACCESS_POLICY_GROUP}"


@pytest.mark.parametrize("obj", list(EXAMPLES.values()), ids=list(EXAMPLES))
def test_every_example_is_valid_for_the_schema_and_the_parser(obj: Obj) -> None:
    assert not list(VALIDATOR.iter_errors(obj))
    parse_policy(obj)


@pytest.mark.parametrize("obj", docs_examples(), ids=lambda o: o["metadata"]["name"])
def test_every_policy_the_docs_show_is_valid_for_the_schema_and_the_parser(obj: Obj) -> None:
    assert not list(VALIDATOR.iter_errors(obj))
    parse_policy(obj)


@pytest.mark.parametrize(("what", "obj", "fragment", "who"), MALFORMED,
                         ids=[m[0] for m in MALFORMED])
def test_a_malformed_policy_is_refused_by_the_parser_and_where_it_can_by_the_schema(
    what: str, obj: Obj, fragment: str, who: str
) -> None:
    with pytest.raises(PolicyError):
        parse_policy(obj)
    errors = list(VALIDATOR.iter_errors(obj))
    if who == "schema":
        assert errors, f"{what}: the schema accepts it ({fragment!r} expected)"
