"""Every route against its own /openapi.json, with schemathesis, over real HTTP.

For each operation schemathesis generates valid and invalid requests from the
schema and checks the answers: no server error, a documented status, the
documented content type and headers, a body that matches the schema, and
schema-invalid data refused. Generations are capped at a few tokens so the run
stays short.

Two checks are left out, both about how strict the server is rather than what
it answers: that every schema-valid request is accepted (some rules are not
JSON Schema: a prompt must fit the context, a tool message needs content,
images are refused; such requests rightly get a 400), and that every
schema-invalid one is refused (numbers are read leniently, 5.0 as 5 and true
as 1, as pydantic does by default). Generation is derandomized: the same cases
on every run.
"""

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from mlxserve.app import create_app
from mlxserve.config import DEMO_MODEL_PATH, Settings
from tests.conftest import MODEL_NAME, LiveServer

EXAMPLES_PER_OPERATION = 25
LENIENCY_CHECKS = [positive_data_acceptance, negative_data_rejection]
SETTINGS = dict(
    model=str(DEMO_MODEL_PATH),
    served_model_name=MODEL_NAME,
    max_tokens=4,  # every generation is short
    queue_timeout=5,
)


def cases() -> list[tuple[str, str, GenerationMode]]:
    """(method, path, mode) for every documented operation (the schema needs no running
    model): valid requests for each, invalid ones for each that takes a body or a query
    (a path segment is any string, so there is nothing else to make invalid)."""
    paths = create_app(Settings(**SETTINGS)).openapi()["paths"]
    out = []
    for path, ops in paths.items():
        for method, op in ops.items():
            out.append((method.upper(), path, GenerationMode.POSITIVE))
            query = any(p.get("in") == "query" for p in op.get("parameters", []))
            if "requestBody" in op or query:
                out.append((method.upper(), path, GenerationMode.NEGATIVE))
    return out


@pytest.fixture(scope="module")
def live(engine):
    """One server for the whole module, over the shared engine."""
    with LiveServer(create_app(Settings(**SETTINGS), engine=engine)) as server:
        yield server


@pytest.fixture(scope="module")
def api_schema(live):
    return schemathesis.openapi.from_url(live.url + "/openapi.json")


@pytest.mark.parametrize("method, path, mode", cases(), ids=str)
def test_operation_conforms_to_its_schema(api_schema, live, method, path, mode):
    operation = api_schema[path][method]
    fixed = {}
    if method == "DELETE" and path == "/v1/models/{model_id}":
        # Unloading the one model would make every later case wait for a reload.
        fixed["path_parameters"] = {"model_id": "not-a-loaded-model"}

    @given(case=operation.as_strategy(generation_mode=mode, **fixed))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case):
        case.call_and_validate(timeout=60, excluded_checks=LENIENCY_CHECKS)

    check()
    live.wait_idle(timeout=30)
