"""Repeated instructions (docs/methods.md, Magpie synthesis): sentence embeddings as unit vectors, then the selection
stage's exact kNN (`selection.dedup.neighbor_stats`: FAISS on the CPU, torch on a GPU) with Magpie's rule: an
instruction repeats another within squared L2 distance `radius`, and is a duplicate when an earlier one does."""

from __future__ import annotations

import numpy as np

from deita_train.selection.config import DedupConfig
from deita_train.selection.dedup import NeighborStats, neighbor_stats
from deita_train.synth.config import RepetitionConfig


def embed_instructions(instructions: list[str], config: RepetitionConfig) -> np.ndarray:
    """[n, d] float32 unit vectors from the sentence-transformers `config.model`, on this process's device."""
    from sentence_transformers import SentenceTransformer

    from deita_train.processes import process_state

    encoder = SentenceTransformer(config.model, device=str(process_state().device))
    vectors = encoder.encode(instructions, batch_size=config.batch_size, normalize_embeddings=True,
                             convert_to_numpy=True, show_progress_bar=False)
    return vectors.astype(np.float32)


def repetition_stats(instructions: list[str], config: RepetitionConfig) -> NeighborStats:
    """Per instruction: squared L2 distance to the nearest other one, how many others lie within `config.radius`,
    and whether an earlier one does (`duplicate`)."""
    if not instructions:
        return NeighborStats(np.zeros(0, np.float32), np.zeros(0, np.int64), np.zeros(0, bool), np.zeros(0, np.int64))
    dedup = DedupConfig(neighbors=config.neighbors, radius=config.radius, backend="auto")
    return neighbor_stats(embed_instructions(instructions, config), dedup)

