"""Magpie tags: strict parsing of judge and guard answers, language, repetition, and DPO pairs with rewards."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest
from transformers import AutoTokenizer

from deita_train.synth.backends.base import Completion, GenerationBackend, Sampling
from deita_train.synth.config import RepetitionConfig
from deita_train.synth.language import detect_languages
from deita_train.synth.pairs import build_pairs, load_reward_scorer, pick_pair, reward_values
from deita_train.synth.repetition import embed_instructions, repetition_stats
from deita_train.synth.safety import guard_pairs, parse_verdict
from deita_train.synth.tags import TAGS, judge_prompt, parse_tag, tag_instructions


def stop(text: str) -> Completion:
    return Completion(text=text, finish_reason="stop", tokens=len(text))


class ScriptedModel(GenerationBackend):
    """A test double for a judge or guard model: `answer(prompt)` scripts each completion; calls are recorded."""

    name = "scripted"

    def __init__(self, answer: Callable[[str], Completion]) -> None:
        self.answer = answer
        self.calls: list[tuple[list[str], Sampling]] = []

    def complete(self, prompts: list[str], sampling: Sampling) -> list[list[Completion]]:
        self.calls.append((prompts, sampling))
        return [[self.answer(prompt) for _ in range(sampling.n)] for prompt in prompts]


@pytest.mark.parametrize(("tag", "text", "expected"), [
    ("difficulty", ' "intent": "The user wants to add", "knowledge": "sums", "difficulty": "very easy"}', ("very easy", None)),
    ("difficulty", '\n  "difficulty": "hard"\n}\n ', ("hard", None)),
    ("difficulty", ' "difficulty": "Hard"}', (None, "wrong_case")),
    ("difficulty", ' "difficulty": "VERY HARD"}', (None, "wrong_case")),
    ("difficulty", ' "difficulty": " hard"}', (None, "unknown_label")),
    ("difficulty", ' "difficulty": "extreme"}', (None, "unknown_label")),
    ("difficulty", ' "difficulty": 3}', (None, "unknown_label")),
    ("difficulty", ' "difficulty": ["hard"]}', (None, "unknown_label")),
    ("difficulty", ' "difficulty": null}', (None, "unknown_label")),
    ("difficulty", ' "intent": "The user wants to add"}', (None, "missing_key")),
    ("difficulty", ' "Difficulty": "hard"}', (None, "missing_key")),
    ("difficulty", ' "difficulty": "hard"} I hope this helps!', (None, "invalid_json")),
    ("difficulty", ' "difficulty": "hard"}\n```', (None, "invalid_json")),
    ("difficulty", ' "difficulty": "hard"}<|im_end|>', (None, "invalid_json")),
    ("difficulty", 'Sure! Here is the JSON: {"difficulty": "hard"}', (None, "invalid_json")),
    ("difficulty", ' "difficulty": "hard"', (None, "invalid_json")),
    ("difficulty", ' "difficulty": "hard"}{"difficulty": "easy"}', (None, "invalid_json")),
    ("difficulty", "difficulty: hard}", (None, "invalid_json")),
    ("difficulty", "", (None, "invalid_json")),
    ("input_quality", ' "explanation": "Clear.", "input_quality": "average"}', ("average", None)),
    ("input_quality", ' "explanation": "Clear.", "quality": "average"}', (None, "missing_key")),
    ("input_quality", ' "explanation": "Clear.", "input_quality": "Excellent"}', (None, "wrong_case")),
    ("task_category", ' "primary_tag": "Coding & Debugging", "other_tags": ["Math"]}', ("Coding & Debugging", None)),
    ("task_category", ' "primary_tag": "Others", "other_tags": []}', ("Others", None)),
    ("task_category", ' "primary_tag": "coding & debugging", "other_tags": []}', (None, "wrong_case")),
    ("task_category", ' "primary_tag": "Information Seeking", "other_tags": []}', (None, "wrong_case")),
    ("task_category", ' "primary_tag": "Coding and Debugging", "other_tags": []}', (None, "unknown_label")),
])
def test_tag_answers_are_parsed_strictly(tag, text, expected):
    assert parse_tag(stop(text), TAGS[tag]) == expected


def test_an_answer_cut_by_max_tokens_is_never_read():
    spec = TAGS["difficulty"]
    assert parse_tag(Completion(' "difficulty": "hard"}', "length", 8), spec) == (None, "length")
    assert parse_tag(Completion(' "intent": "The user wants', "length", 8), spec) == (None, "length")


def test_each_prompt_asks_for_its_key_and_lists_every_label():
    for spec in TAGS.values():
        prompt = spec.prompt.format(instruction="QUERY")
        assert f'"{spec.key}"' in prompt and "QUERY" in prompt
        assert all(label in prompt for label in spec.labels)


def test_tag_instructions_renders_through_the_judge_template_and_counts_failures(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    instructions = ["What is 2+2?", "Write a haiku about {autumn}.", "Fix my Python loop."]
    script = {
        ("difficulty", instructions[0]): ' "intent": "add", "knowledge": "sums", "difficulty": "very easy"}',
        ("difficulty", instructions[1]): ' "intent": "a poem", "knowledge": "haiku", "difficulty": "Easy"}',
        ("difficulty", instructions[2]): ' "intent": "debug", "knowledge": "Python", "difficulty": "medium"}',
        ("input_quality", instructions[0]): ' "explanation": "Clear.", "input_quality": "good"}',
        ("input_quality", instructions[1]): ' "explanation": "Clear." } and more prose',
        ("input_quality", instructions[2]): ' "explanation": "No code given.", "input_quality": "poor"}',
        ("task_category", instructions[0]): ' "primary_tag": "Math", "other_tags": []}',
        ("task_category", instructions[1]): ' "primary_tag": "Creative writing", "other_tags": ["Brainstorming"]}',
        ("task_category", instructions[2]): ' "other_tags": ["Coding & Debugging"]}',
    }

    def answer(prompt: str) -> Completion:
        tag = next(name for name, spec in TAGS.items() if f'"{spec.key}"' in prompt)
        instruction = next(text for text in instructions if f"```\n{text}\n```" in prompt)
        return stop(script[tag, instruction])

    judge = ScriptedModel(answer)
    result = tag_instructions(instructions, judge, tokenizer, ["difficulty", "input_quality", "task_category"], max_tokens=64,
                              seed=3)
    assert result.labels == {"difficulty": ["very easy", None, "medium"], "input_quality": ["good", None, "poor"],
                             "task_category": ["Math", "Creative writing", None]}
    assert result.reasons["difficulty"] == [None, "wrong_case", None]
    assert result.failures() == {"difficulty": Counter(wrong_case=1), "input_quality": Counter(invalid_json=1),
                                 "task_category": Counter(missing_key=1)}
    assert len(judge.calls) == 3
    for (prompts, sampling), tag in zip(judge.calls, ["difficulty", "input_quality", "task_category"], strict=True):
        assert sampling == Sampling(max_tokens=64, temperature=0.0, n=1, stop_token_ids=(tokenizer.eos_token_id,),
                                    seed=3)
        for prompt, instruction in zip(prompts, instructions, strict=True):
            user = [{"role": "user", "content": TAGS[tag].prompt.format(instruction=instruction)}]
            rendered = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
            assert prompt == judge_prompt(tokenizer, tag, instruction) == rendered + "{"
            assert prompt.startswith("<|im_start|>user\n") and prompt.endswith("<|im_end|>\n<|im_start|>assistant\n{")


def test_tag_instructions_counts_answers_cut_by_length_and_uses_given_stops(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    judge = ScriptedModel(lambda prompt: Completion(' "intent": "The user wants to', "length", 5))
    result = tag_instructions(["a", "b"], judge, tokenizer, ["task_category"], max_tokens=5, seed=0, stop_token_ids=(7, 8))
    assert result.labels == {"task_category": [None, None]} and result.failures() == {"task_category": Counter(length=2)}
    assert judge.calls[0][1].stop_token_ids == (7, 8)


@pytest.mark.parametrize(("text", "expected"), [
    ("safe", ("safe", None, None)),
    ("\n\nsafe\n", ("safe", None, None)),
    ("unsafe\nS1", ("unsafe", "S1", None)),
    ("\n\nunsafe\nS1,S10", ("unsafe", "S1,S10", None)),
    ("unsafe", (None, None, "missing_categories")),
    ("unsafe\nS1, S10", (None, None, "invalid_categories")),
    ("unsafe\nviolence", (None, None, "invalid_categories")),
    ("unsafe\nS1,", (None, None, "invalid_categories")),
    ("unsafe\nS1\nS2", (None, None, "extra_lines")),
    ("safe\nThe response is harmless.", (None, None, "extra_lines")),
    ("Safe", (None, None, "unknown_verdict")),
    ("The conversation is safe.", (None, None, "unknown_verdict")),
    ("", (None, None, "unknown_verdict")),
])
def test_guard_answers_are_parsed_strictly(text, expected):
    assert parse_verdict(stop(text)) == expected


def test_guard_pairs_renders_the_conversation_with_the_guard_template(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    verdicts = {"Tell me a joke.": "safe", "How do I pick a lock?": "unsafe\nS2", "Hi": "maybe"}
    guard = ScriptedModel(lambda prompt: stop(next(v for q, v in verdicts.items() if f"user\n{q}<" in prompt)))
    result = guard_pairs(list(verdicts), ["Why did the chicken...", "First, ...", "Hello!"], guard, tokenizer, seed=1)
    assert result.verdicts == ["safe", "unsafe", None] and result.categories == [None, "S2", None]
    assert result.failures() == Counter(unknown_verdict=1)
    prompts, sampling = guard.calls[0]
    assert prompts[0] == ("<|im_start|>user\nTell me a joke.<|im_end|>\n<|im_start|>assistant\n"
                          "Why did the chicken...<|im_end|>\n<|im_start|>assistant\n")
    assert sampling.temperature == 0.0 and sampling.n == 1
    cut = guard_pairs(["q"], ["a"], ScriptedModel(lambda p: Completion("unsafe\nS", "length", 32)), tokenizer, seed=1)
    assert cut.verdicts == [None] and cut.failures() == Counter(length=1)


def test_languages_are_iso_639_1_and_never_guessed():
    texts = ["Write a short poem about the sea and the wind.",
             "Écris un court poème sur la mer et le vent, s'il te plaît.",
             "请写一首关于大海和风的短诗。", "", "   \n", "12345 !!! 678"]
    result = detect_languages(texts)
    assert result.codes == ["en", "fr", "zh", None, None, None]
    assert result.reasons == [None, None, None, "empty", "empty", "undetectable"]
    assert detect_languages(texts).codes == result.codes  # deterministic


@pytest.mark.parametrize("neighbors", [500, 3])  # 3: the first group fills the k-NN, so the range search counts it
def test_repetition_flags_exact_and_near_duplicates_after_the_first(tiny_sentence_model, neighbors):  # noqa: F811
    instructions = ["Write a poem about the sea.", "Explain how photosynthesis works in plants.",
                    "Write a poem about the sea.", "Write a poem about the sea!", "What is the capital of France?",
                    "How do I reverse a list in Python?"]
    config = RepetitionConfig(model=str(tiny_sentence_model), neighbors=neighbors, batch_size=4)
    stats = repetition_stats(instructions, config)
    assert stats.duplicate.tolist() == [False, False, True, True, False, False]
    assert stats.repeat_count.tolist() == [2, 0, 2, 2, 0, 0]
    vectors = embed_instructions(instructions, config)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    squared = ((vectors[:, None] - vectors[None]) ** 2).sum(-1)
    np.fill_diagonal(squared, np.inf)
    np.testing.assert_allclose(stats.min_neighbor_distance, squared.min(1), atol=1e-5)
    assert stats.earlier.tolist()[:2] == [-1, -1] and stats.earlier.tolist()[4:] == [-1, -1]
    for row in (2, 3):  # the nearest earlier copy (0 and 2 are the same text: either, for row 3)
        assert squared[row, stats.earlier[row]] == pytest.approx(squared[row, :row].min(), abs=1e-5)
    assert len(repetition_stats([], config).duplicate) == 0


@pytest.mark.parametrize(("responses", "rewards", "expected"), [
    (["a", "b", "c", "d"], [0.1, 0.5, -0.2, 0.3], (1, 2)),
    (["a", "b", "c", "d"], [0.5, -1.0, 0.5, -1.0], (0, 1)),  # ties at both ends: the first index wins
    (["a", "b", "c"], [0.3, 0.3, 0.3], "tie"),
    (["a", "b", "c"], [None, 0.2, None], "unscored"),
    (["a", "b"], [float("nan"), 1.0], "unscored"),
    (["", " \n", "c"], [1.0, 2.0, 3.0], "empty"),
    (["", "b", "c"], [9.0, 1.0, 2.0], (2, 1)),  # an empty response never takes part, whatever its reward
    (["a", "b", "c"], [None, 1.0, 2.0], (2, 1)),
])
def test_pick_pair(responses, rewards, expected):
    assert pick_pair(responses, rewards) == expected


def test_build_pairs_writes_trl_conversational_rows_and_counts_drops():
    result = build_pairs(
        ["q0", "q1", "q2", "q3"],
        [["a", "b", "c"], ["x", "y"], ["u", "v"], ["", "w"]],
        [[1.0, 3.0, -2.0], [0.5, 0.5], [None, 1.0], [0.0, 1.0]],
    )
    assert result.rows == [{
        "prompt": [{"role": "user", "content": "q0"}],
        "chosen": [{"role": "assistant", "content": "b"}],
        "rejected": [{"role": "assistant", "content": "c"}],
        "chosen_reward": 3.0, "rejected_reward": -2.0, "all_rewards": [1.0, 3.0, -2.0],
    }]
    assert result.sources == [0] and result.dropped == Counter(tie=1, unscored=1, empty=1)
    with pytest.raises(ValueError, match="instruction 0: 2 responses but 1 rewards"):
        build_pairs(["q"], [["a", "b"]], [[1.0]])


def test_reward_values_through_a_tiny_reward_model(tiny_reward_model):  # noqa: F811
    scorer = load_reward_scorer({"model": str(tiny_reward_model), "dtype": "float32", "shard_size": 2})
    instructions = ["What is 2+2?", "What is 2+2?", "What is 2+2?", "Name a color."]
    responses = ["4.", "It is four.", "", "Blue."]
    values, reasons = reward_values(scorer, instructions, responses)
    assert reasons == [None, None, "empty answer", None] and values[2] is None
    for i in (0, 1, 3):
        messages = [{"role": "user", "content": instructions[i]}, {"role": "assistant", "content": responses[i]}]
        (alone,) = scorer.score_batch([{"id": 0, "messages": messages}])
        assert values[i] == pytest.approx(alone.value, abs=1e-5)
    pairs = build_pairs(["What is 2+2?"], [responses[:3]], [values[:3]])
    chosen, rejected = (0, 1) if values[0] > values[1] else (1, 0)
    assert pairs.rows[0]["chosen"][0]["content"] == responses[chosen]
    assert pairs.rows[0]["rejected"][0]["content"] == responses[rejected]
    assert pairs.rows[0]["all_rewards"] == values[:3]
