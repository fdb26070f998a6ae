"""An OpenAI-compatible `/v1/completions` endpoint (vLLM, SGLang) behind the backend contract: raw prompts, one
request per prompt, `concurrency` requests in flight, through the `openai` client (its timeout, and its retries with
exponential backoff of timeouts, connection errors, 408/409/429 and 5xx answers).

Each request carries its own seed (`request_seed`), so identical prompts get different samples and a call's results
depend only on its prompts, sampling and seed. Stop token ids go in vLLM's `stop_token_ids` extension.

Token counts: the OpenAI schema gives only `usage.completion_tokens`, the sum over a request's choices; it is exact
for one choice and shared among several in proportion to their text length plus one (the stop token).
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import openai

from deita_train.errors import UserError
from deita_train.synth.backends.base import Completion, GenerationBackend, Sampling, request_seed, samples_per_request
from deita_train.synth.config import GeneratorConfig


class EndpointError(UserError):
    """A request the endpoint did not answer, even after the client's retries, or answered malformed."""


class EndpointBackend(GenerationBackend):
    """Completions from the server at `config.base_url`, for the model it serves as `served_model` (else `model`)."""

    name = "endpoint"

    def __init__(self, config: GeneratorConfig) -> None:
        self.base_url = config.base_url
        self.model = config.served_model or config.model
        self.concurrency = config.concurrency
        self.max_retries = config.max_retries
        self.client = openai.OpenAI(
            base_url=config.base_url,
            api_key=os.environ.get(config.api_key_env) or "EMPTY",
            timeout=config.timeout,
            max_retries=config.max_retries,
        )

    def complete(self, prompts: list[str], sampling: Sampling) -> list[list[Completion]]:
        """`sampling.n` completions per prompt, in prompt order; the first failed request stops the call (requests
        not yet sent are cancelled)."""
        pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="endpoint")
        try:
            futures = [pool.submit(self._request, prompt, index, sampling) for index, prompt in enumerate(prompts)]
            return [self._result(future, index) for index, future in enumerate(futures)]
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        self.client.close()

    def _request(self, prompt: str, index: int, sampling: Sampling) -> list[Completion]:
        requested = samples_per_request(sampling)
        options: dict[str, Any] = {"stop": list(sampling.stop)} if sampling.stop else {}
        if sampling.stop_token_ids:
            options["extra_body"] = {"stop_token_ids": list(sampling.stop_token_ids)}
        response = self.client.completions.create(
            model=self.model, prompt=prompt, n=requested, temperature=sampling.temperature, top_p=sampling.top_p,
            max_tokens=sampling.max_tokens, seed=request_seed(sampling.seed, index), **options,
        )
        if len(response.choices) != requested or response.usage is None:
            raise EndpointError(f"{self.base_url}: prompt {index}: expected {requested} choice(s) and `usage`, got "
                                f"{len(response.choices)} choice(s) and usage={response.usage}; is it an OpenAI-"
                                "compatible completions server (vLLM, SGLang)?")
        choices = sorted(response.choices, key=lambda choice: choice.index)
        counts = split_tokens(response.usage.completion_tokens, [choice.text for choice in choices])
        completions = [
            Completion(choice.text, "length" if choice.finish_reason == "length" else "stop", count)
            for choice, count in zip(choices, counts, strict=True)
        ]
        return completions * (sampling.n // requested)  # greedy: one answer, `n` copies

    def _result(self, future: Future[list[Completion]], index: int) -> list[Completion]:
        try:
            return future.result()
        except openai.APIError as error:
            raise EndpointError(
                f"{self.base_url}: the completion request for prompt {index} failed (timeouts, connection errors, "
                f"408/409/429 and 5xx answers are retried, max_retries={self.max_retries}): {type(error).__name__}: "
                f"{error}. "
                f"Check that the server is up and serves {self.model!r}; raise the generator's `timeout` for slow "
                "answers, its `max_retries` for a flaky server, or lower its `concurrency` for an overloaded one"
            ) from error


def split_tokens(total: int, texts: list[str]) -> list[int]:
    """`total` tokens shared among choices in proportion to `len(text) + 1`, rounded by largest remainder so the
    counts sum to `total`."""
    weights = [len(text) + 1 for text in texts]
    shares = [total * weight / sum(weights) for weight in weights]
    counts = [int(share) for share in shares]
    for i in sorted(range(len(texts)), key=lambda i: counts[i] - shares[i])[: total - sum(counts)]:
        counts[i] += 1
    return counts
