"""An LLM judge behind any OpenAI-compatible chat completions endpoint, scoring answers 1-10.

The judge's reply must contain MT-Bench's `[[rating]]` (FastChat `llm_judge/common.py` `one_score_pattern`);
a reply without one, a rating outside 1-10, or a failed request is a counted error, never a score.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass, field

RATING = re.compile(r"\[\[(\d+\.?\d*)\]\]")


@dataclass
class JudgeConfig:
    """The judge model and where to reach it."""

    base_url: str = field(metadata={"help": "OpenAI-compatible API root, e.g. `http://localhost:8000/v1`."})
    model: str = field(metadata={"help": "Judge model name sent in each request, e.g. `gpt-4`."})
    api_key_env: str | None = field(
        default="OPENAI_API_KEY",
        metadata={"help": "Environment variable holding the API key; None sends no Authorization header."},
    )
    temperature: float = field(default=0.0, metadata={"help": "Sampling temperature of the judge (MT-Bench: 0)."})
    max_tokens: int = field(default=2048, metadata={"help": "Most tokens of the judge's reply (MT-Bench: 2048)."})
    timeout: float = field(default=120.0, metadata={"help": "Seconds to wait for one reply."})


@dataclass(frozen=True)
class Judgment:
    """One judged answer: a rating, or the error that kept the reply from giving one."""

    rating: float | None
    reply: str | None
    error: str | None = None


class JudgeClient:
    """Sends judge prompts to `config.base_url`/chat/completions and parses the rating of each reply."""

    def __init__(self, config: JudgeConfig) -> None:
        self.config = config
        self.headers = {"Content-Type": "application/json"}
        if config.api_key_env is not None:
            key = os.environ.get(config.api_key_env)
            if not key:
                raise ValueError(f"judge.api_key_env: environment variable {config.api_key_env} is not set; "
                                 "export the judge's API key there, or set api_key_env: null for a keyless server")
            self.headers["Authorization"] = f"Bearer {key}"

    def complete(self, messages: list[dict[str, str]]) -> str:
        """The judge's reply text; raises on HTTP errors and replies that are not chat completions."""
        body = {"model": self.config.model, "messages": messages, "temperature": self.config.temperature,
                "max_tokens": self.config.max_tokens}
        request = urllib.request.Request(self.config.base_url.rstrip("/") + "/chat/completions",
                                         data=json.dumps(body).encode("utf-8"), headers=self.headers, method="POST")
        with urllib.request.urlopen(request, timeout=self.config.timeout) as response:
            reply = json.loads(response.read().decode("utf-8"))
        content = reply["choices"][0]["message"]["content"]
        if not isinstance(content, str):
            raise ValueError(f"choices[0].message.content is {type(content).__name__}, not text")
        return content

    def judge(self, messages: list[dict[str, str]]) -> Judgment:
        """The rating of one judge prompt, or the error (request failed, no `[[rating]]`, rating not in 1-10)."""
        try:
            reply = self.complete(messages)
        except (urllib.error.URLError, TimeoutError, OSError, ValueError, KeyError, IndexError, TypeError) as error:
            return Judgment(rating=None, reply=None, error=f"request failed: {type(error).__name__}: {error}")
        rating, error = parse_rating(reply)
        return Judgment(rating=rating, reply=reply, error=error)


def parse_rating(reply: str) -> tuple[float | None, str | None]:
    """(rating, None) for the first `[[x]]` with 1 <= x <= 10 in `reply`, else (None, the reason)."""
    match = RATING.search(reply)
    if match is None:
        return None, "no [[rating]] in the judge's reply"
    rating = float(match.group(1))
    if not 1 <= rating <= 10:
        return None, f"rating {rating} is outside 1-10"
    return rating, None


def summarize(judgments: list[Judgment]) -> dict[str, float | int | None]:
    """Mean rating over the judged answers, the number judged and the number of errors."""
    ratings = [j.rating for j in judgments if j.rating is not None]
    return {
        "judge_score": sum(ratings) / len(ratings) if ratings else None,
        "judged": len(ratings),
        "judge_errors": len(judgments) - len(ratings),
    }
