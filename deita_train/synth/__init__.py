"""Magpie synthesis (docs/methods.md, Magpie synthesis): instructions and responses from an aligned model, tags,
repetition, filters and DPO pairs, written as a `datasets` dataset the other stages read without conversion."""
