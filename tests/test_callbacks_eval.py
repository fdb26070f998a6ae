"""The judge client against a local chat-completions server, the `eval` callback under a real Trainer, and
`run_eval` / `deita-train eval` with the tiny model."""

from __future__ import annotations

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from datasets import Dataset
from deita_train.callbacks import CallbackContext, EvalCallback, EvalConfig
from deita_train.callbacks.backends import tensorboard_dir
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer

from deita_train.data.config import SourceConfig
from deita_train.evaluation.command import add_eval_command
from deita_train.evaluation.judge import JudgeClient, JudgeConfig, parse_rating
from deita_train.evaluation.mt_bench import judge_messages, questions
from deita_train.evaluation.run import run_eval


class FakeJudge:
    """A chat-completions server on 127.0.0.1: replies from `replies` in turn (cycled); records the requests."""

    def __init__(self, replies: list[str | int]) -> None:
        self.replies, self.requests, self.count = replies, [], 0
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                judge.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                reply = judge.replies[judge.count % len(judge.replies)]
                judge.count += 1
                if isinstance(reply, int):  # an HTTP error status
                    self.send_response(reply)
                    self.end_headers()
                    return
                payload = json.dumps({"id": "x", "object": "chat.completion", "model": body["model"], "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}]})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(payload.encode())

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.config = JudgeConfig(base_url=f"http://127.0.0.1:{self.server.server_address[1]}/v1", model="judge-1",
                                  api_key_env="FAKE_JUDGE_KEY", timeout=10)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_judge(monkeypatch):
    monkeypatch.setenv("FAKE_JUDGE_KEY", "sk-test")
    servers = []

    def start(replies):
        servers.append(FakeJudge(replies))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def test_parse_rating():
    assert parse_rating("Fine answer. Rating: [[7]]") == (7.0, None)
    assert parse_rating("Rating: [[8.5]] and later [[2]]") == (8.5, None)  # the first, as FastChat
    assert parse_rating("Rating: 7")[0] is None
    assert parse_rating("Rating: [[11]]") == (None, "rating 11.0 is outside 1-10")


def test_judge_client_parses_scores_and_counts_errors(fake_judge):
    server = fake_judge(["Helpful. Rating: [[9]]", "I cannot rate this.", 500])
    client = JudgeClient(server.config)
    name, messages = judge_messages(questions()[0], ["An answer."])
    assert name == "single-v1" and "An answer." in messages[1]["content"]
    good, malformed, failed = (client.judge(messages) for _ in range(3))
    assert good.rating == 9.0 and good.error is None
    assert malformed.rating is None and malformed.error == "no [[rating]] in the judge's reply"
    assert failed.rating is None and failed.error.startswith("request failed: HTTPError")
    request = server.requests[0]
    assert request["path"] == "/v1/chat/completions" and request["auth"] == "Bearer sk-test"
    assert request["body"]["model"] == "judge-1" and request["body"]["temperature"] == 0.0


def test_math_questions_are_judged_against_the_reference():
    math = next(q for q in questions() if q.category == "math")
    name, messages = judge_messages(math, ["4", "5"])
    assert name == "single-math-v1-multi-turn"
    assert math.reference[1] in messages[1]["content"] and "### Assistant A:\n5" in messages[1]["content"]


def test_judge_needs_its_api_key(monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY", raising=False)
    with pytest.raises(ValueError, match="NO_SUCH_KEY is not set"):
        JudgeClient(JudgeConfig(base_url="http://127.0.0.1:1/v1", model="m", api_key_env="NO_SUCH_KEY"))


def test_eval_callback_logs_loss_generations_and_judge_score(tiny_model, tmp_path, fake_judge):
    server = fake_judge(["Rating: [[8]]", "no score here"])
    heldout = tmp_path / "heldout.jsonl"
    heldout.write_text("".join(json.dumps({"instruction": f"Name a colour number {i}.", "input": "",
                                           "output": f"Blue, number {i}."}) + "\n" for i in range(5)))
    config = EvalConfig(name="eval", every_steps=2, dataset=[SourceConfig(path=str(heldout), format="alpaca")],
                        max_samples=4, num_prompts=3, max_new_tokens=6, batch_size=2, judge=server.config)
    callback = EvalCallback(config, CallbackContext(output_dir=tmp_path))
    train = Dataset.from_list([{"messages": [{"role": "user", "content": f"hello {i}"},
                                             {"role": "assistant", "content": f"hi there {i}"}]} for i in range(8)])
    args = SFTConfig(output_dir=str(tmp_path / "sft"), max_steps=2, per_device_train_batch_size=4, use_cpu=True,
                     report_to=["tensorboard"], save_strategy="no", max_length=64)
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model), args=args, train_dataset=train,
                         processing_class=AutoTokenizer.from_pretrained(tiny_model), callbacks=[callback])
    trainer.train()

    found = EventAccumulator(str(tensorboard_dir(trainer.args)))
    found.Reload()
    assert [e.step for e in found.Scalars("eval/heldout_loss")] == [2]  # at_end does not repeat step 2
    assert 0 < found.Scalars("eval/heldout_loss")[0].value < 20
    assert found.Scalars("eval/judge_score")[0].value == 8.0  # replies 1 and 3 rated 8, reply 2 malformed
    assert found.Scalars("eval/judge_errors")[0].value == 1
    assert found.Scalars("eval/judged")[0].value == 2
    assert "eval/generations/text_summary" in found.Tags()["tensors"]
    records = [json.loads(line) for line in (tmp_path / "sft" / "eval" / "generations.jsonl").read_text().splitlines()]
    assert [r["question_id"] for r in records] == [q.question_id for q in questions()[:3]]
    assert [r["rating"] for r in records] == [8.0, None, 8.0]
    assert records[1]["error"] == "no [[rating]] in the judge's reply"
    assert len(server.requests) == 3


def test_run_eval_and_command_write_answers_judgments_summary(tiny_model, tmp_path, fake_judge):
    server = fake_judge(["Rating: [[6]]", "Rating: [[4]]", "[[rating]]"])
    summary = run_eval(tiny_model, tmp_path / "direct", server.config, num_questions=2, max_new_tokens=5,
                       batch_size=2, device="cpu")
    answers = [json.loads(x) for x in (tmp_path / "direct" / "answers.jsonl").read_text().splitlines()]
    judgments = [json.loads(x) for x in (tmp_path / "direct" / "judgments.jsonl").read_text().splitlines()]
    assert [len(a["turns"]) for a in answers] == [2, 2]
    assert [(j["question_id"], j["turn"]) for j in judgments] == [(81, 1), (81, 2), (82, 1), (82, 2)]
    assert [j["rating"] for j in judgments] == [6.0, 4.0, None, 6.0]
    assert summary["judge_score"] == pytest.approx(16 / 3) and summary["judge_errors"] == 1
    assert summary["turns"]["2"] == {"judge_score": 5.0, "judged": 2, "judge_errors": 0}
    assert json.loads((tmp_path / "direct" / "summary.json").read_text()) == summary

    parser = argparse.ArgumentParser()
    add_eval_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["eval", str(tiny_model), "--out", str(tmp_path / "cli"), "--num-questions", "1",
                              "--max-new-tokens", "4"])
    assert args.handler(args) == 0
    assert (tmp_path / "cli" / "answers.jsonl").is_file() and (tmp_path / "cli" / "summary.json").is_file()
    assert not (tmp_path / "cli" / "judgments.jsonl").exists()  # no judge given
