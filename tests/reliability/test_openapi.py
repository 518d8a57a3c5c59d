"""schemathesis against the webhook's own OpenAPI description, in-process over ASGI.

The description of ``POST /mutate`` (an AdmissionReview in, an AdmissionReview or an error out)
is documentation: the fast path never validates against it. So this checks that the two agree.
Bodies the schema calls valid are answered 200 with a conforming AdmissionReview, never a 400
or a 5xx. Bodies that break it (negative mode) get no 5xx and an answer of a declared status,
type and shape; they need not be refused, because the webhook allows anything that is not a
Pod CREATE untouched (the API server only sends Pod CREATEs), which one schema cannot say.
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import negative_data_rejection

from injector.webhook.app import create_app
from mesh.settings import MeshConfig


def _schema(mode: GenerationMode) -> schemathesis.BaseSchema:
    loaded = schemathesis.openapi.from_asgi("/openapi.json", create_app(config=MeshConfig()))
    loaded.config.generation.update(modes=[mode])
    return loaded


valid = _schema(GenerationMode.POSITIVE)
invalid = _schema(GenerationMode.NEGATIVE).include(path="/mutate")  # the GETs take no input
BOUNDED = settings(max_examples=150, deadline=None, database=None,
                   suppress_health_check=list(HealthCheck))


@valid.parametrize()
@BOUNDED
def test_a_request_the_description_calls_valid_gets_a_conforming_answer(
    case: schemathesis.Case,
) -> None:
    case.call_and_validate()


@invalid.parametrize()
@BOUNDED
def test_a_request_breaking_the_description_gets_a_declared_answer_and_no_5xx(
    case: schemathesis.Case,
) -> None:
    case.call_and_validate(excluded_checks=[negative_data_rejection])
