"""`python -m deita_train RECIPE` (and `accelerate launch -m deita_train RECIPE`) runs the recipe."""

import sys

from deita_train.cli.main import run_recipe_main

if __name__ == "__main__":
    sys.exit(run_recipe_main())
