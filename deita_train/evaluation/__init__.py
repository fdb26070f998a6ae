"""MT-Bench generation and LLM-as-a-judge scoring, for the `eval` callback and `deita-train eval`."""
