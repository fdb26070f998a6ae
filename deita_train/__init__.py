"""deita-train: data selection (Deita, IFD, rewards, embeddings) built into TRL SFT and DPO training."""

__version__ = "0.1.0"
