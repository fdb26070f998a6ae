"""Online selection inside training (docs/methods.md, online selection): re-score the candidates with the model
being trained, re-select, and keep training on the new subset through a sampler the trainer owns.

- `config.py`: the recipe's `online:` section;
- `sampler.py`: the training sampler, a pure function of the rounds so far, the epoch and the seed;
- `rescoring.py`: one round's scoring (sharded over processes) and selection (main process, broadcast);
- `rounds.py`: `online/round_<k>/` on disk (write, read back on resume);
- `callback.py`: when rounds fire; `trainer.py`: the SFTTrainer that owns the sampler and the callback.
"""
