"""Sampling defaults: request values, else generation_config.json, else OpenAI's."""

from mlxserve.schemas.openai import ChatCompletionRequest
from mlxserve.service import resolve_sampling

MSG = [{"role": "user", "content": "hi"}]


def req(**kw):
    return ChatCompletionRequest(messages=MSG, **kw)


def test_openai_defaults_without_generation_config():
    s = resolve_sampling(req(), {})
    assert (s.temperature, s.top_p, s.top_k, s.min_p) == (1.0, 1.0, 0, 0.0)
    assert s.repetition_penalty is None and s.seed is None


def test_generation_config_fills_omitted_values():
    cfg = {"temperature": 0.6, "top_p": 0.95, "top_k": 20, "min_p": 0.05, "repetition_penalty": 1.1}
    s = resolve_sampling(req(), cfg)
    assert (s.temperature, s.top_p, s.top_k, s.min_p, s.repetition_penalty) == (0.6, 0.95, 20, 0.05, 1.1)


def test_explicit_values_including_zero_win():
    cfg = {"temperature": 0.6, "top_p": 0.95, "top_k": 20}
    s = resolve_sampling(req(temperature=0, top_p=0.5, top_k=0), cfg)
    assert (s.temperature, s.top_p, s.top_k) == (0.0, 0.5, 0)


def test_do_sample_false_means_greedy_by_default():
    assert resolve_sampling(req(), {"do_sample": False, "temperature": 0.7}).temperature == 0.0
    assert resolve_sampling(req(temperature=0.3), {"do_sample": False}).temperature == 0.3


def test_penalties_and_bias():
    s = resolve_sampling(
        req(presence_penalty=0.5, frequency_penalty=0, logit_bias={"12": -100}, seed=3), {}
    )
    assert s.presence_penalty == 0.5 and s.frequency_penalty is None
    assert s.logit_bias == {12: -100} and s.seed == 3
