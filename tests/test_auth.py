"""API keys: every API route needs one once configured; the page and liveness stay open."""

import openai
import pytest

from mlxserve.auth import key_matches, presented_key
from mlxserve.cli import main
from tests.test_errors import assert_envelope

HELLO = [{"role": "user", "content": "Say hello."}]


@pytest.fixture
def locked(make_server, tmp_path):
    """A server that accepts two keys from the flag and one from a key file."""
    key_file = tmp_path / "keys"
    key_file.write_text("# mlxserve keys\nfile-key\n\n")
    return make_server(api_key="key-one, key-two", api_key_file=str(key_file))


@pytest.mark.parametrize("key", ["key-one", "key-two", "file-key"])
def test_each_configured_key_is_accepted(locked, examples, key):
    client = openai.OpenAI(base_url=locked.url + "/v1", api_key=key, max_retries=0)
    reply = client.chat.completions.create(model="m", messages=HELLO)
    assert reply.choices[0].message.content == examples["short"]["completion"]


def test_wrong_key_raises_the_sdks_authentication_error(locked):
    client = openai.OpenAI(base_url=locked.url + "/v1", api_key="key-three", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        client.chat.completions.create(model="m", messages=HELLO, stream=True)
    assert info.value.status_code == 401
    assert info.value.code == "invalid_api_key"


@pytest.mark.parametrize(
    "method, path",
    [
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/completions"),
        ("GET", "/v1/models"),
        ("GET", "/v1/models/test-model"),
        ("GET", "/v1/nowhere"),
    ],
)
def test_api_routes_need_a_key(locked, method, path):
    with locked.http() as http:
        r = http.request(method, path, json={"messages": HELLO, "prompt": "x"})
    err = assert_envelope(r, 401, code="invalid_api_key")
    assert "API key" in err["message"]
    assert r.headers["www-authenticate"] == "Bearer"


def test_x_api_key_header_is_accepted_as_anthropic_clients_send_it(locked):
    with locked.http() as http:
        assert http.get("/v1/models", headers={"x-api-key": "key-two"}).status_code == 200
        assert http.get("/v1/models", headers={"x-api-key": "nope"}).status_code == 401


@pytest.mark.parametrize("path", ["/", "/static/app.js", "/healthz", "/health"])
def test_page_and_liveness_stay_open(locked, path):
    with locked.http() as http:
        assert http.get(path).status_code == 200


def test_no_key_configured_means_open(server):
    with server.http() as http:
        assert http.get("/v1/models").status_code == 200


def test_unreadable_key_file_stops_the_cli_with_status_2(tmp_path, capsys):
    assert main(["serve", "--api-key-file", str(tmp_path / "missing")]) == 2
    assert "cannot read API key file" in capsys.readouterr().err


def test_empty_key_file_stops_the_cli_with_status_2(tmp_path, capsys):
    (tmp_path / "keys").write_text("# nothing here\n")
    assert main(["serve", "--api-key-file", str(tmp_path / "keys")]) == 2
    assert "holds no key" in capsys.readouterr().err


def test_presented_key_reads_bearer_then_x_api_key():
    assert presented_key({b"authorization": b"Bearer abc"}) == "abc"
    assert presented_key({b"authorization": b"bearer  abc "}) == "abc"
    assert presented_key({b"authorization": b"Basic abc"}) is None
    assert presented_key({b"x-api-key": b"xyz"}) == "xyz"
    assert presented_key({}) is None


def test_key_matches_only_whole_keys():
    assert key_matches("abc", ["x", "abc"])
    assert not key_matches("ab", ["abc"])
    assert not key_matches("abcd", ["abc"])
    assert not key_matches("abc", [])
