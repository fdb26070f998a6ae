"""`deita-train synth`: the phases over the shards, sharded over processes, cached and resumable; then the assembly.

Instruction ids 0..num_instructions-1 are cut into shards of `shard_size`; under `accelerate launch` process p runs
shards p, p + N, ... A shard's seeds come from (recipe seed, shard, step), never from the process, so 1 and N
processes write the same rows. Each phase's finished shards are kept under `<output_dir>/synth_shards/<phase>/`
(scores, stats, done marker; see `scoring/cache.py`), so a killed run resumes with the shards it had not finished.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
from tqdm.auto import tqdm

from deita_train.fingerprints import digest
from deita_train.processes import on_main_process, process_state
from deita_train.scoring.cache import ShardStore
from deita_train.synth.config import SynthConfig
from deita_train.synth.phases import GeneratePhase, Phase

logger = logging.getLogger(__name__)

CODE_VERSION = 1  # bump when a change makes cached synth shards wrong


def shard_ranges(config: SynthConfig) -> list[range]:
    size = config.shard_size
    return [range(start, min(start + size, config.num_instructions))
            for start in range(0, config.num_instructions, size)]


def phases(config: SynthConfig, seed: int) -> list[Phase]:
    """The phases this config asks for, generate first."""
    from deita_train.synth.tag_phases import tag_phases

    return [GeneratePhase(config, seed), *tag_phases(config, seed)]


class SynthShards:
    """The cached shards of every phase under `root`, keyed by the phase's identity and the shard's generation."""

    def __init__(self, root: Path, config: SynthConfig, seed: int) -> None:
        self.root, self.ranges = root, shard_ranges(config)
        self.phases = phases(config, seed)
        # each phase's identity once: it reads the model files' identities (sampled hashes), the same for every shard
        self.identities = {phase.name: digest(phase.identity()) for phase in self.phases}
        self.generate_keys = [digest({"code": CODE_VERSION, "generate": self.identities["generate"], "shard": i,
                                      "ids": [r.start, r.stop]}) for i, r in enumerate(self.ranges)]

    def store(self, phase: Phase) -> ShardStore:
        return ShardStore(self.root / phase.name)

    def key(self, phase: Phase, shard: int) -> str:
        if phase.name == "generate":
            return self.generate_keys[shard]
        return digest({"code": CODE_VERSION, "phase": self.identities[phase.name], "rows": self.generate_keys[shard]})

    def input_rows(self, phase: Phase, shard: int) -> pa.Table:
        """What `phase` reads for a shard: its ids (generate), else the generated rows that were kept."""
        if phase.name == "generate":
            return pa.table({"id": pa.array(self.ranges[shard], pa.int64())})
        table, _ = self.store(self.phases[0]).read(self.generate_keys[shard])
        return table.filter(table.column("drop_reason").is_null())

    def run(self, shards: list[int], show_progress: bool) -> dict[str, int]:
        """Run every phase over `shards` (this process's), one model at a time; how many shards were reused."""
        reused = {}
        for phase in self.phases:
            store = self.store(phase)
            todo = [shard for shard in shards if not store.done(self.key(phase, shard))]
            reused[phase.name] = len(shards) - len(todo)
            if todo:
                self.run_phase(phase, store, todo, show_progress)
        return reused

    def run_phase(self, phase: Phase, store: ShardStore, todo: list[int], show_progress: bool) -> None:
        progress = tqdm(total=sum(len(self.ranges[s]) for s in todo), desc=f"synth {phase.name}", unit="row",
                        disable=not show_progress)
        phase.load()
        started, tokens = time.perf_counter(), 0
        try:
            for shard in todo:
                begun = time.perf_counter()
                table, stats = phase.run(shard, self.input_rows(phase, shard))
                stats["seconds"] = round(time.perf_counter() - begun, 3)
                store.write(self.key(phase, shard), table, stats)
                tokens += sum(value for name, value in stats.items() if name.endswith("_tokens"))
                progress.update(len(self.ranges[shard]))
                if tokens:
                    progress.set_postfix(tokens_per_s=f"{tokens / (time.perf_counter() - started):.1f}")
        finally:
            phase.close()
            progress.close()

    def read(self, phase: Phase) -> tuple[pa.Table, list[dict[str, Any]]]:
        """Every shard of `phase`, in shard order, and their stats."""
        store = self.store(phase)
        parts = [store.read(self.key(phase, shard)) for shard in range(len(self.ranges))]
        return pa.concat_tables([table for table, _ in parts]), [stats for _, stats in parts]


def synthesize(config: SynthConfig, seed: int, out: Path) -> dict[str, Any]:
    """Run the synth stage into `out/synth/`; every process returns the summary."""
    from deita_train.synth.assemble import assemble

    state = process_state()
    shards = SynthShards(out / "synth_shards", config, seed)
    mine = list(range(len(shards.ranges)))[state.process_index::state.num_processes]
    started = time.perf_counter()
    reused = shards.run(mine, show_progress=state.is_main_process)
    state.wait_for_everyone()
    seconds = time.perf_counter() - started
    return on_main_process(lambda: assemble(shards, config, out / "synth", reused, seconds), "synth assembly")
