"""Trainer callbacks, installed as `deita_train.callbacks`."""
