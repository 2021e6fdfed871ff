"""The command line shared by every job: ``--config FILE`` plus ``key.sub=value`` overrides."""

from __future__ import annotations

import argparse
import sys
from typing import TypeVar

from rankdistill.config import load_config
from rankdistill.errors import ConfigError

T = TypeVar("T")


def parse_args(cls: type[T], argv: list[str] | None = None, description: str | None = None) -> T:
    parser = argparse.ArgumentParser(
        description=description,
        epilog="Overrides: any config key as key.sub=value, e.g. retrieval.k=100 tracking.experiment=demo",
    )
    parser.add_argument("--config", help="YAML config file (see configs/)")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    args = parser.parse_args(argv)
    return load_config(cls, args.config, args.overrides)


def run_job(cls: type[T], main, argv: list[str] | None = None, description: str | None = None) -> None:
    """Parse the config and call ``main(config)``; configuration errors exit 2 with the message."""
    try:
        config = parse_args(cls, argv, description)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    main(config)
