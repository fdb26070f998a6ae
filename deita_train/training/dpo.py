"""The dpo stage: TRL's DPOTrainer on prompt/chosen/rejected message lists, from the SFT output."""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset
from transformers import TrainerCallback
from trl import DPOConfig, DPOTrainer

from deita_train.data.chat_templates import apply_chat_template
from deita_train.training.config import DPOStage, ModelConfig, PeftSection
from deita_train.training.models import load_causal_lm, load_tokenizer
from deita_train.training.peft_setup import lora_config, quantization_config
from deita_train.training.sft import finish, refuse_unmet, split_resume
from deita_train.training.weights import weighted

DPO_DEFAULTS = {"report_to": "none"}


def train_dpo(
    preferences: Dataset,
    model_config: ModelConfig,
    stage: DPOStage,
    start_from: str,
    output_dir: Path,
    seed: int,
    callbacks: list[TrainerCallback] | None = None,
    peft: PeftSection | None = None,
    eval_dataset: Dataset | None = None,
) -> DPOTrainer:
    """Train `start_from` (the SFT output, or a model) with DPO; TRL makes the frozen reference copy. With
    `stage.sample_weight` the pairs' weights are computed (and checked) first."""
    fields, resume = split_resume(DPO_DEFAULTS | stage.args)
    columns = ["prompt", "chosen", "rejected"]
    train, trainer_class = preferences.select_columns(columns), DPOTrainer
    if stage.sample_weight is not None:
        train, trainer_class = weighted(train, preferences, "dpo", stage.sample_weight, fields, trainer_class)
    args = DPOConfig(output_dir=str(output_dir), seed=seed, **fields)
    tokenizer = load_tokenizer(start_from, model_config.trust_remote_code)
    if not tokenizer.chat_template or model_config.chat_template != "model":
        tokenizer = apply_chat_template(tokenizer, model_config.chat_template)
    model = load_causal_lm(model_config, start_from, quantization_config(peft) if peft else None)
    refuse_unmet("dpo", fields, model)
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=eval_dataset.select_columns(columns) if eval_dataset is not None else None,
        processing_class=tokenizer,
        callbacks=callbacks,
        peft_config=lora_config(peft) if peft else None,
    )
    trainer.train(resume_from_checkpoint=resume)
    finish(trainer, output_dir, peft)
    return trainer
