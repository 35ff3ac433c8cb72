"""/v1/embeddings with the openai SDK, on the test model (mean-pooled hidden states)."""

import base64

import numpy as np
import pytest

from tests.test_errors import assert_envelope

TEXTS = ["Say hello.", "Tell me a long story.", "What is the weather in Paris?"]
WIDTH = 64  # the test model's hidden size


def vectors(reply):
    return np.array([d.embedding for d in sorted(reply.data, key=lambda d: d.index)])


def test_shape_usage_and_unit_length(server, engine):
    reply = server.openai().embeddings.create(model="m", input=TEXTS)
    got = vectors(reply)
    assert got.shape == (3, WIDTH)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    tokens = sum(len(engine.tokenizer.encode(t, add_special_tokens=False)) for t in TEXTS)
    assert reply.usage.prompt_tokens == reply.usage.total_tokens == tokens
    assert reply.model == "test-model"


def test_deterministic_and_independent_of_batching(server):
    client = server.openai()
    batch = vectors(client.embeddings.create(model="m", input=TEXTS))
    alone = np.concatenate([vectors(client.embeddings.create(model="m", input=t)) for t in TEXTS])
    again = vectors(client.embeddings.create(model="m", input=TEXTS))
    assert np.array_equal(batch, again)
    assert np.allclose(batch, alone, atol=1e-6)


def test_a_text_is_closer_to_itself_than_to_others(server):
    got = vectors(server.openai().embeddings.create(model="m", input=TEXTS + ["Say hello."]))
    similarity = got @ got.T
    assert similarity[0, 3] == pytest.approx(1.0, abs=1e-5)
    assert similarity[0, 3] > max(similarity[0, 1], similarity[0, 2])
    assert not np.allclose(got[0], got[1])


def test_token_id_inputs_match_text_inputs(server, engine):
    client = server.openai()
    ids = engine.tokenizer.encode(TEXTS[1], add_special_tokens=False)
    by_ids = vectors(client.embeddings.create(model="m", input=[ids]))
    by_text = vectors(client.embeddings.create(model="m", input=TEXTS[1]))
    assert np.allclose(by_ids, by_text, atol=1e-6)


def test_base64_is_little_endian_float32(server):
    with server.http() as http:
        floats = http.post("/v1/embeddings", json={"input": TEXTS[0]}).json()
        packed = http.post("/v1/embeddings", json={"input": TEXTS[0], "encoding_format": "base64"}).json()
    decoded = np.frombuffer(base64.b64decode(packed["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, floats["data"][0]["embedding"], atol=1e-7)


def test_dimensions_keep_a_renormalized_prefix(server):
    client = server.openai()
    full = vectors(client.embeddings.create(model="m", input=TEXTS[0]))[0]
    short = vectors(client.embeddings.create(model="m", input=TEXTS[0], dimensions=16))[0]
    assert short.shape == (16,)
    assert np.allclose(short, full[:16] / np.linalg.norm(full[:16]), atol=1e-5)


@pytest.mark.parametrize(
    "body, param",
    [
        ({"input": ""}, "input"),
        ({"input": []}, "input"),
        ({"input": ["ok", ""]}, "input"),
        ({"input": [[1, 2], []]}, "input"),
        ({"input": [[1, 10**9]]}, "input"),
        ({"input": "x", "dimensions": 0}, "dimensions"),
        ({"input": "x", "dimensions": WIDTH + 1}, "dimensions"),
        ({"input": "x", "encoding_format": "hex"}, "encoding_format"),
        ({"input": "word " * 3000}, "input"),
    ],
)
def test_bad_embedding_requests_are_400(server, body, param):
    with server.http() as http:
        r = http.post("/v1/embeddings", json=body)
    assert_envelope(r, 400, param=param)
    server.wait_idle()
