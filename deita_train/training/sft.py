"""The sft stage: TRL's SFTTrainer on the selected conversations, loss on assistant tokens only."""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset
from transformers import TrainerCallback
from trl import SFTConfig, SFTTrainer

from deita_train.recipe.schema import ModelConfig, SFTStage
from deita_train.training.chat_templates import apply_chat_template
from deita_train.training.models import load_causal_lm, load_tokenizer

# Defaults where deita-train differs from TRL: Deita-7B trains on assistant tokens only (METHODS.md 6).
SFT_DEFAULTS = {"assistant_only_loss": True, "report_to": "none"}


def train_sft(
    conversations: Dataset,
    model_config: ModelConfig,
    stage: SFTStage,
    output_dir: Path,
    seed: int,
    callbacks: list[TrainerCallback] | None = None,
) -> SFTTrainer:
    """Train on the `messages` column of `conversations`; the final model and tokenizer go to `output_dir`."""
    args = SFTConfig(output_dir=str(output_dir), seed=seed, **(SFT_DEFAULTS | stage.args))
    tokenizer = apply_chat_template(
        load_tokenizer(model_config.name_or_path, model_config.trust_remote_code), model_config.chat_template
    )
    trainer = SFTTrainer(
        model=load_causal_lm(model_config),
        args=args,
        train_dataset=conversations.select_columns(["messages", "id"]),
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    finish(trainer, output_dir)
    return trainer


def finish(trainer, output_dir: Path) -> None:
    """Save the final model and tokenizer, with EOS in the generation config so the model stops."""
    tokenizer = trainer.processing_class
    trainer.model.generation_config.eos_token_id = tokenizer.eos_token_id
    trainer.model.generation_config.pad_token_id = tokenizer.pad_token_id
    trainer.save_model(str(output_dir))
    trainer.save_state()
