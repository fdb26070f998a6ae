"""How the quickstart data was cut from the public files in ../shared/data (see README.md here).

Run from the repository root: python recipes/quickstart/data/make_fixtures.py ../shared/data
"""

import gzip
import json
import random
import sys
from pathlib import Path

ROLES = {"human": "user", "gpt": "assistant", "system": "system"}


def main(shared: Path) -> None:
    here = Path(__file__).parent
    alpaca = json.load(gzip.open(shared / "instruct/alpaca_data_cleaned_early2023_51941.json.gz"))
    picked = random.Random(0).sample(range(len(alpaca)), 1400)
    with open(here / "alpaca_cleaned_400.jsonl", "w") as out:
        for i in sorted(picked[:400]):
            out.write(json.dumps(alpaca[i], ensure_ascii=False) + "\n")
    fields = ("instruction", "input", "output")
    corpus = "\n".join("\n".join(alpaca[i][f] for f in fields) for i in picked[400:])
    Path("deita_train/training/assets/tokenizer_corpus.txt").write_text(corpus + "\n")
    pairs = json.load(open(shared / "preference/llamafactory_dpo_en_demo.json"))
    with open(here / "preference_300.jsonl", "w") as out:
        for pair in pairs:
            prompt = [{"role": ROLES[t["from"]], "content": t["value"]} for t in pair["conversations"]]
            row = {
                "prompt": prompt,
                "chosen": [{"role": "assistant", "content": pair["chosen"]["value"]}],
                "rejected": [{"role": "assistant", "content": pair["rejected"]["value"]}],
            }
            out.write(json.dumps(row, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
