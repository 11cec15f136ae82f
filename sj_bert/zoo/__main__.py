"""``python -m sj_bert.zoo``: print the zoo's results table; ``--write-table`` regenerates
the one in the checkout's ``zoo/README.md``."""

from __future__ import annotations

import argparse
from typing import Optional

from ..files import write_text
from .registry import list_pretrained, load_registry, results_table, zoo_dir

TABLE_START, TABLE_END = "<!-- table:start -->", "<!-- table:end -->"


def write_table() -> None:
    """Replace the table between the markers of ``zoo/README.md`` with the registry's."""
    readme = zoo_dir() / "README.md"
    text = readme.read_text()
    head, rest = text.split(TABLE_START, 1)
    _, tail = rest.split(TABLE_END, 1)
    write_text(readme, f"{head}{TABLE_START}\n{results_table(load_registry())}\n{TABLE_END}{tail}")


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description="sj-bert checkpoint zoo")
    parser.add_argument("--write-table", action="store_true", help="regenerate zoo/README.md's table")
    args = parser.parse_args(argv)
    if args.write_table:
        write_table()
    else:
        list_pretrained()


if __name__ == "__main__":
    main()
