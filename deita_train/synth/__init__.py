"""Magpie synthesis (METHODS.md section 5): instructions and responses from an aligned model, tags, repetition,
filters and DPO pairs, written as a `datasets` dataset the other stages read without conversion."""
