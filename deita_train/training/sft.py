"""The sft stage: TRL's SFTTrainer on the selected conversations, loss on assistant tokens only."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from datasets import Dataset
from transformers import PreTrainedModel, Trainer, TrainerCallback
from trl import SFTConfig, SFTTrainer

from deita_train.data.chat_templates import apply_chat_template
from deita_train.training.config import ModelConfig, PeftSection, SFTStage
from deita_train.training.models import load_causal_lm, load_tokenizer
from deita_train.training.peft_setup import lora_config, quantization_config, save_adapter
from deita_train.training.preconditions import liger_problems, packing_problems
from deita_train.training.weights import weighted

# Defaults where deita-train differs from TRL: Deita-7B trains on assistant tokens only (docs/methods.md 6).
SFT_DEFAULTS = {"assistant_only_loss": True, "report_to": "none"}


def split_resume(args: dict[str, Any]) -> tuple[dict[str, Any], bool | str | None]:
    """TRL config fields, and `resume_from_checkpoint` (True: the last checkpoint in output_dir) for `train()`."""
    rest = {k: v for k, v in args.items() if k != "resume_from_checkpoint"}
    return rest, args.get("resume_from_checkpoint")


def train_sft(
    conversations: Dataset,
    model_config: ModelConfig,
    stage: SFTStage,
    output_dir: Path,
    seed: int,
    callbacks: list[TrainerCallback] | None = None,
    peft: PeftSection | None = None,
    eval_dataset: Dataset | None = None,
    trainer_class: Callable[..., SFTTrainer] = SFTTrainer,
    carried: tuple[str, ...] = (),
) -> SFTTrainer:
    """Train on the `messages` column of `conversations` (evaluating on `eval_dataset`'s when given); the final
    model and tokenizer go to `output_dir`.

    `trainer_class` builds the trainer from SFTTrainer's arguments (online selection passes its own), and `carried`
    names the columns of `conversations` it reads beside `messages` and `id`. With `stage.sample_weight` the rows'
    weights are computed (and checked) first, then the trainer weighs its loss by them.
    """
    fields, resume = split_resume(SFT_DEFAULTS | stage.args)
    train = conversations.select_columns(["messages", "id", *carried])
    if stage.sample_weight is not None:
        train, trainer_class = weighted(train, conversations, "sft", stage.sample_weight, fields, trainer_class)
    args = SFTConfig(output_dir=str(output_dir), seed=seed, **fields)
    tokenizer = apply_chat_template(
        load_tokenizer(model_config.name_or_path, model_config.trust_remote_code), model_config.chat_template
    )
    model = load_causal_lm(model_config, quantization_config=quantization_config(peft) if peft else None)
    refuse_unmet("sft", fields, model)
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=eval_dataset.select_columns(["messages"]) if eval_dataset is not None else None,
        processing_class=tokenizer,
        callbacks=callbacks,
        peft_config=lora_config(peft) if peft else None,
    )
    trainer.train(resume_from_checkpoint=resume)
    finish(trainer, output_dir, peft)
    return trainer


def refuse_unmet(section: str, fields: dict[str, Any], model: PreTrainedModel) -> None:
    """Stop before training when a requested feature's precondition fails on the model as loaded."""
    problems = packing_problems(section, fields, model.config._attn_implementation)
    problems += liger_problems(section, fields)
    if problems:
        raise ValueError("; ".join(problems))


def finish(trainer: Trainer, output_dir: Path, peft: PeftSection | None) -> None:
    """Save the final model (or adapter) and tokenizer, with EOS in the generation config so the model stops;
    with eval data, the final weights' eval metrics go to `eval_results.json`."""
    tokenizer = trainer.processing_class
    model = trainer.accelerator.unwrap_model(trainer.model)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    if peft is None:
        trainer.save_model(str(output_dir))
    elif trainer.is_world_process_zero():
        save_adapter(model, output_dir, peft.merge)
        tokenizer.save_pretrained(str(output_dir))
    trainer.save_state()
    if trainer.args.push_to_hub:
        push_model(trainer, peft)
    if trainer.eval_dataset is not None:
        metrics = final_eval_metrics(trainer)
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)


def final_eval_metrics(trainer: Trainer) -> dict[str, float]:
    """Eval metrics of the final weights: those of the evaluation training already ran at the last step
    (`eval_strategy` often ends there), else a new evaluation."""
    last = trainer.state.global_step
    done = next((entry for entry in reversed(trainer.state.log_history)
                 if "eval_loss" in entry and entry.get("step") == last), None)
    return {key: value for key, value in done.items() if key != "step"} if done else trainer.evaluate()


def push_model(trainer: Trainer, peft: PeftSection | None) -> None:
    """`push_to_hub: true` (with `hub_model_id`): the final model through the Trainer, with its model card; with
    PEFT the adapter alone (the merged copy stays local: `<stage>/`)."""
    if peft is None:
        trainer.push_to_hub(commit_message="deita-train: final model")
    elif trainer.is_world_process_zero():
        model = trainer.accelerator.unwrap_model(trainer.model)
        model.push_to_hub(trainer.hub_model_id, private=trainer.args.hub_private_repo)
        trainer.processing_class.push_to_hub(trainer.hub_model_id, private=trainer.args.hub_private_repo)
