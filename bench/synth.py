"""Magpie generation throughput through the synth stage's own code (pre-query template derived from the chat
template, the backend, the stops): instructions/s of step 1 (sampling from the template alone) and response
tokens/s of step 2 (greedy answers through the chat template), on a model with random weights built locally.

A random model seldom stops, so most samples run to `--max-tokens`: the figures are generation speed, not yield.
Step 2 answers the instructions step 1 wrote (cut ones included), so both steps see real prompt lengths.

    PYTHONPATH=. python bench/synth.py                                 # CPU: the tiny model (deita-train tiny-model)
    PYTHONPATH=. python bench/synth.py --size 1b --tokenizer .gpu-data/llama3 --instructions 1024 \
        --batch-size 256 --max-tokens 256 --json $OUT/synth_h200.json    # H200: a Llama-3.2-1B-shape model, bf16
    (add --backend vllm where vLLM installs)
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

from deita_train.synth.backends import make_backend
from deita_train.synth.config import GeneratorConfig, InstructionSampling, ResponseSampling, SynthConfig
from deita_train.synth.prompting import Prompting
from deita_train.training.tiny_model import build_tiny_model

LLAMA_1B = {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
            "num_key_value_heads": 8}  # the Llama-3.2-1B shape


def build_model(size: str, tokenizer_dir: str | None, folder: Path) -> Path:
    """`tiny`: the project's tiny model; `1b`: a random Llama-3.2-1B-shape model (bf16) with the given tokenizer."""
    if size == "tiny":
        return build_tiny_model(folder)
    if tokenizer_dir is None:
        raise SystemExit("--size 1b needs --tokenizer (a folder with a chat template, e.g. shared/data/tokenizers/"
                         "llama3)")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), **LLAMA_1B, tie_word_embeddings=True,
                         max_position_embeddings=8192, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def timed(backend, prompts: list[str], sampling) -> tuple[list, float]:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    results = backend.complete(prompts, sampling)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return results, time.perf_counter() - started


def main() -> None:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["tiny", "1b"], default="1b" if cuda else "tiny")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder for --size 1b")
    parser.add_argument("--backend", choices=["transformers", "vllm"], default="transformers")
    parser.add_argument("--instructions", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=128, help="max new tokens of instructions and of answers")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        model = build_model(args.size, args.tokenizer, Path(scratch) / "model")
        dtype = "bfloat16" if args.size == "1b" else "float32"
        generator = GeneratorConfig(model=str(model), backend=args.backend, dtype=dtype, batch_size=args.batch_size)
        config = SynthConfig(generator=generator, num_instructions=args.instructions,
                             instruction=InstructionSampling(max_tokens=args.max_tokens, stop_at_newline=False),
                             response=ResponseSampling(max_tokens=args.max_tokens))
        prompting = Prompting.for_model(AutoTokenizer.from_pretrained(model), config)
        backend = make_backend(generator)
        timed(backend, [prompting.template] * min(args.batch_size, 8), prompting.sampling(config.instruction, 0))
        asked, ask_seconds = timed(backend, [prompting.template] * args.instructions,
                                   prompting.sampling(config.instruction, 1))
        questions = [[{"role": "user", "content": row[0].text.strip() or "?"}] for row in asked]
        answered, answer_seconds = timed(backend, [prompting.response_prompt(q) for q in questions],
                                         prompting.sampling(config.response, 2))
        backend.close()
    instruction_tokens = sum(row[0].tokens for row in asked)
    response_tokens = sum(row[0].tokens for row in answered)
    figures = {
        "hardware": torch.cuda.get_device_name() if cuda else f"CPU ({platform.processor() or platform.machine()}, "
                                                              f"{torch.get_num_threads()} threads)",
        "size": args.size, "backend": args.backend, "dtype": dtype, "template": prompting.template,
        "instructions": args.instructions, "batch_size": args.batch_size, "max_tokens": args.max_tokens,
        "instructions_per_s": round(args.instructions / ask_seconds, 2),
        "instruction_tokens_per_s": round(instruction_tokens / ask_seconds, 1),
        "responses_per_s": round(len(answered) / answer_seconds, 2),
        "response_tokens_per_s": round(response_tokens / answer_seconds, 1),
        "seconds": {"instructions": round(ask_seconds, 2), "responses": round(answer_seconds, 2)},
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
