"""Generation backends: transformers `generate` on the tiny model, an OpenAI-compatible endpoint served by a real
local HTTP server, and the backend choice."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch

from deita_train.synth.backends import make_backend
from deita_train.synth.backends.base import Completion, Sampling, request_seed
from deita_train.synth.backends.endpoint import EndpointError, split_tokens
from deita_train.synth.backends.transformers_backend import TransformersBackend
from deita_train.synth.config import GeneratorConfig

from .completion_server import CompletionServer

TEMPLATE = "<|im_start|>user\n"


@pytest.fixture(scope="module")
def backend(tiny_model):
    backend = make_backend(GeneratorConfig(model=str(tiny_model), backend="transformers", batch_size=2))
    yield backend
    backend.close()


def texts(results: list[list[Completion]]) -> list[list[str]]:
    return [[completion.text for completion in row] for row in results]


def test_n_samples_per_prompt_across_batches(backend):
    prompts = [TEMPLATE, TEMPLATE, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"]  # batches of 2, 1
    results = backend.complete(prompts, Sampling(max_tokens=8, n=3, seed=1))
    assert [len(row) for row in results] == [3, 3, 3]
    for row in results:
        assert len(set(texts([row])[0])) == 3  # samples differ
        for completion in row:
            assert 0 < completion.tokens <= 8
            assert (completion.finish_reason == "length") == (completion.tokens == 8)
    assert results[0] != results[1]  # the same prompt twice: different samples


def test_same_seed_same_results_whatever_ran_before(backend):
    prompts = [TEMPLATE, "<|im_start|>user\nWrite a poem"]
    first = backend.complete(prompts, Sampling(max_tokens=10, n=2, seed=5))
    other = backend.complete(prompts, Sampling(max_tokens=10, n=2, seed=6))
    torch.rand(100)
    assert backend.complete(prompts, Sampling(max_tokens=10, n=2, seed=5)) == first
    assert other != first


def test_greedy_gives_n_equal_copies_and_left_padding_keeps_batched_equal_to_alone(backend):
    prompts = ["def foo():", "<s>", "Once upon a time there was a king who"]  # different lengths in one batch
    batched = backend.complete(prompts, Sampling(max_tokens=6, temperature=0, n=2))
    for prompt, row in zip(prompts, batched, strict=True):
        assert row[0] == row[1]
        assert backend.complete([prompt], Sampling(max_tokens=6, temperature=0))[0][0] == row[0]


def test_stop_string_cuts_the_text(backend):
    sampling = Sampling(max_tokens=16, temperature=0)
    (full,) = backend.complete(["def foo():"], sampling)[0]
    stop = max(set(full.text), key=full.text.index)  # the character that appears last for the first time
    (cut,) = backend.complete(["def foo():"], Sampling(max_tokens=16, temperature=0, stop=(stop,)))[0]
    assert cut.text == full.text[: full.text.index(stop)] and cut.finish_reason == "stop"
    assert 0 < cut.tokens < full.tokens


def test_sampled_stop_string_cuts_the_same_sample(backend):
    (full,) = backend.complete([TEMPLATE], Sampling(max_tokens=24, seed=3))[0]
    stop = full.text[8:10]
    (cut,) = backend.complete([TEMPLATE], Sampling(max_tokens=24, seed=3, stop=(stop,)))[0]
    assert cut.text == full.text[: full.text.index(stop)] and cut.finish_reason == "stop"


def test_stop_token_ids_end_generation_and_are_counted(backend):
    ids = backend.tokenizer("def foo():", add_special_tokens=False, return_tensors="pt")
    generated = backend.model.generate(**ids, max_new_tokens=12, do_sample=False)[0, ids["input_ids"].shape[1] :]
    stop_id = int(generated[-1])
    end = generated.tolist().index(stop_id)
    (completion,) = backend.complete(["def foo():"], Sampling(max_tokens=12, temperature=0, stop_token_ids=(stop_id,)))[0]
    assert completion == Completion(backend.tokenizer.decode(generated[:end], skip_special_tokens=True), "stop", end + 1)


def test_finish_reason_length_at_max_tokens(backend):
    results = backend.complete([TEMPLATE, TEMPLATE], Sampling(max_tokens=2, n=2, seed=0))
    assert {(c.finish_reason, c.tokens) for row in results for c in row} == {("length", 2)}


@pytest.mark.parametrize(("cuda", "expected"), [(False, "transformers"), (True, "vllm")])
def test_auto_picks_vllm_only_with_vllm_and_a_gpu(tiny_model, monkeypatch, cuda, expected):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "vllm" else find_spec(name, *a))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setitem(sys.modules, "vllm", None)  # "installed", but importing it fails: the choice shows
    if expected == "vllm":
        with pytest.raises(ImportError, match="pip install vllm"):
            make_backend(GeneratorConfig(model=str(tiny_model)))
    else:
        assert isinstance(make_backend(GeneratorConfig(model=str(tiny_model))), TransformersBackend)


def test_vllm_backend_without_vllm_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(ImportError, match="pip install vllm"):
        make_backend(GeneratorConfig(model="some/model", backend="vllm"))


def test_request_seed_is_stable_and_distinct_per_prompt():
    seeds = [request_seed(7, index) for index in range(100)]
    assert seeds == [request_seed(7, index) for index in range(100)]
    assert len(set(seeds)) == 100 and all(0 <= seed < 2**31 for seed in seeds)
    assert request_seed(8, 0) != seeds[0]


def test_split_tokens_sums_to_total():
    assert split_tokens(7, ["abc"]) == [7]
    assert split_tokens(10, ["a", "bbb"]) == [3, 7]
    assert sum(split_tokens(11, ["", "x", "yy"])) == 11


# --- endpoint: a real HTTP server on 127.0.0.1 ---

def echo(prompt, body):
    return [(f"{prompt}-{i}", "length" if prompt == "long" else "stop") for i in range(body["n"])]


def endpoint(server, **options):
    return make_backend(GeneratorConfig(model="tiny", served_model="served", backend="endpoint",
                                        base_url=server.base_url, **options))


def test_endpoint_answers_in_prompt_order_with_n():
    prompts = ["a", "long", "c", "d", "e"]
    with CompletionServer(echo) as server:
        backend = endpoint(server, concurrency=3)
        results = backend.complete(prompts, Sampling(max_tokens=9, n=2, seed=4, stop=("\n",), stop_token_ids=(7,)))
        backend.close()
    assert texts(results) == [[f"{p}-0", f"{p}-1"] for p in prompts]
    assert [c.finish_reason for c in results[1]] == ["length", "length"]
    assert [c.finish_reason for c in results[0]] == ["stop", "stop"]
    assert all(c.tokens == len(c.text) + 1 for row in results for c in row)  # the server counts len(text) + 1
    body = next(b for b in server.requests if b["prompt"] == "a")
    assert (body["model"], body["n"], body["max_tokens"], body["stop"], body["stop_token_ids"]) == (
        "served", 2, 9, ["\n"], [7])
    assert body["seed"] == request_seed(4, 0)
    assert len({b["seed"] for b in server.requests}) == len(prompts)


def test_endpoint_greedy_requests_one_answer_and_copies_it():
    with CompletionServer(echo) as server:
        results = endpoint(server).complete(["a"], Sampling(max_tokens=4, temperature=0, n=3))
    assert texts(results) == [["a-0"] * 3]
    assert server.requests[0]["n"] == 1 and "stop" not in server.requests[0]
    assert "stop_token_ids" not in server.requests[0]


def test_endpoint_keeps_concurrency_requests_in_flight():
    with CompletionServer(echo, delay=0.2) as server:
        results = endpoint(server, concurrency=4).complete([str(i) for i in range(8)], Sampling(max_tokens=4))
    assert texts(results) == [[f"{i}-0"] for i in range(8)]
    assert 2 <= server.max_in_flight <= 4


def test_endpoint_reads_the_api_key_from_the_named_variable(monkeypatch):
    monkeypatch.setenv("SYNTH_TEST_KEY", "sekret")
    with CompletionServer(echo, api_key="sekret") as server:
        assert texts(endpoint(server, api_key_env="SYNTH_TEST_KEY").complete(["a"], Sampling(max_tokens=4))) == [["a-0"]]
        monkeypatch.delenv("SYNTH_TEST_KEY")
        with pytest.raises(EndpointError, match="AuthenticationError"):
            endpoint(server, api_key_env="SYNTH_TEST_KEY").complete(["a"], Sampling(max_tokens=4))


def test_endpoint_retries_server_errors():
    with CompletionServer(echo, fail_first=2) as server:
        results = endpoint(server, max_retries=2, concurrency=1).complete(["a"], Sampling(max_tokens=4))
    assert texts(results) == [["a-0"]] and server.attempts == 3


def test_endpoint_that_keeps_failing_raises_a_clear_error():
    with CompletionServer(echo, always_fail=True) as server:
        with pytest.raises(EndpointError, match=r"127\.0\.0\.1:\d+/v1: .*prompt 0 failed .*InternalServerError"):
            endpoint(server, max_retries=1, concurrency=1).complete(["a"], Sampling(max_tokens=4))
    assert server.attempts == 2


def test_endpoint_timeout_raises_a_clear_error():
    with CompletionServer(echo, delay=1.5) as server:
        with pytest.raises(EndpointError, match=r"prompt 0 failed .*APITimeoutError.*`timeout`"):
            endpoint(server, timeout=0.3, max_retries=1, concurrency=1).complete(["a"], Sampling(max_tokens=4))
    assert server.attempts == 2
