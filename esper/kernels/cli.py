"""Inspect, tidy and repair a kernel library, local or S3.

    python -m esper.kernels list  [--root DIR | --bucket B [--prefix P] [--endpoint-url U]]
    python -m esper.kernels tidy  [--quarantined] [--unused-days N] [--repair] [--dry-run]
                                  [store options]

Without store options the local default (ESPER_KERNEL_STORE or the user cache) is used; a
local store must exist already (this never creates one). `--repair` quarantines malformed
index entries and drops entries whose artifact is gone. A corrupt index.sqlite is set aside
(to quarantine/, with a note) by any command, as by a run: the store stays usable.
Errors are one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from typing import NoReturn, Protocol, runtime_checkable

from esper.kernels.local_store import LocalStore
from esper.kernels.s3_store import S3Store
from esper.kernels.store import ORPHAN_GRACE_S, KernelStore

PROG = "python -m esper.kernels"


class CliError(Exception):
    """A usage error: printed as one line, exit code 2."""


@runtime_checkable
class Repairable(Protocol):
    def repair(self) -> list[str]: ...


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise CliError(message)


def _days(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text} must be a number of days >= 0")
    return value


def open_store(args: argparse.Namespace) -> KernelStore:
    if args.bucket:
        return S3Store(
            args.bucket, prefix=args.prefix, region=args.region, endpoint_url=args.endpoint_url
        )
    return LocalStore(args.root or os.environ.get("ESPER_KERNEL_STORE") or None, create=False)


COLUMNS = ("kernel", "blueprint", "shape", "params", "p50 us", "p95 us", "bytes", "last used")
LEFT_ALIGNED = ("kernel", "blueprint", "shape", "last used")


def list_kernels(store: KernelStore) -> list[str]:
    """One row a kernel, each column as wide as its widest cell (helper-found: a blueprint
    name longer than 16 characters pushed the rest of its row out of line)."""
    cells = [COLUMNS]
    for k in store.list():
        m = k.metadata
        used = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(k.last_used))
        cells.append(
            (
                m.kernel_id[:12],
                m.spec.blueprint,
                str(list(m.spec.input_shape)),
                str(m.param_count),
                f"{m.latency_us_p50:.1f}",
                f"{m.latency_us_p95:.1f}",
                str(k.size),
                used,
            )
        )
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    rows = [
        "  ".join(
            cell.ljust(width) if name in LEFT_ALIGNED else cell.rjust(width)
            for name, cell, width in zip(COLUMNS, row, widths, strict=True)
        ).rstrip()
        for row in cells
    ]
    quarantined = store.quarantined()
    count = len(rows) - 1
    rows.append(
        f"{count} kernel{'' if count == 1 else 's'} in {store.describe()}; "
        f"{len(quarantined)} quarantined"
    )
    return rows


def tidy(
    store: KernelStore,
    quarantined: bool,
    unused_days: float | None,
    dry_run: bool,
    repair: bool = False,
) -> list[str]:
    report = []
    if repair:
        if not isinstance(store, Repairable):
            raise CliError(f"{store.describe()}: this store cannot be repaired")
        report.extend(store.repair())
    if quarantined:
        count = len(store.quarantined()) if dry_run else store.remove_quarantined()
        report.append(f"{'would remove' if dry_run else 'removed'} {count} quarantined objects")
    if unused_days is not None:
        cutoff = time.time() - unused_days * 86400
        stale = [k for k in store.list() if k.last_used < cutoff]
        for k in stale:
            if not dry_run:
                store.remove(k.metadata.kernel_id)
        report.append(
            f"{'would remove' if dry_run else 'removed'} {len(stale)} kernels unused for "
            f"{unused_days:g} days"
        )
        # helper-found: objects no index row names (a corrupt index set aside) were never
        # removed; their age is their object's, less a grace for a run about to index one
        graced = unused_days * 86400 < ORPHAN_GRACE_S
        orphans = store.orphans(time.time() - ORPHAN_GRACE_S if graced else cutoff)
        if orphans and not dry_run:
            store.remove_orphans(orphans)
        report.append(
            f"{'would remove' if dry_run else 'removed'} {len(orphans)} objects no index entry "
            f"names, written over {'an hour' if graced else f'{unused_days:g} days'} ago"
        )
    return report


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = _Parser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["list", "tidy"])
    parser.add_argument("--root", help="local store directory")
    parser.add_argument("--bucket", help="S3 bucket (selects the S3 store)")
    parser.add_argument("--prefix", default="esper/kernels")
    parser.add_argument("--region", default=os.environ.get("AWS_DEFAULT_REGION"))
    parser.add_argument("--endpoint-url", default=os.environ.get("ESPER_S3_ENDPOINT_URL"))
    parser.add_argument("--quarantined", action="store_true", help="tidy: remove quarantined")
    parser.add_argument("--unused-days", type=_days, help="tidy: remove kernels unused this long")
    parser.add_argument("--repair", action="store_true", help="tidy: repair the index")
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    if (
        args.command == "tidy"
        and not (args.quarantined or args.repair)
        and args.unused_days is None
    ):
        raise CliError("tidy needs --quarantined, --unused-days N and/or --repair")
    if args.repair and args.dry_run:
        raise CliError("--repair has no --dry-run: it only moves bad entries to quarantine")
    for flag, value, allowed in (
        ("--root", args.root, "a store directory"),
        ("--bucket", args.bucket, "a bucket name"),
    ):
        if value is not None and not value.strip():  # helper-found: `--bucket "$B"`, B unset,
            raise CliError(f"{flag} is empty; allowed: {allowed}")  # acted on ~/.cache
    if args.root and args.bucket:
        raise CliError("--root and --bucket name two stores; give one")
    return args


def run(args: argparse.Namespace) -> list[str]:
    store = open_store(args)
    if args.command == "list":
        lines = list_kernels(store)
    else:
        lines = tidy(store, args.quarantined, args.unused_days, args.dry_run, args.repair)
        lines = [f"{line} (in {store.describe()})" for line in lines]
    notices = store.take_notices() if isinstance(store, LocalStore) else []
    for notice in notices:
        print(f"{PROG}: note: {notice}", file=sys.stderr)
    skipped = getattr(store, "skipped_rows", 0)
    if skipped:
        print(
            f"{PROG}: note: {skipped} malformed index rows skipped; run `{PROG} tidy --repair`",
            file=sys.stderr,
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    # the local store's warnings are the notes run() prints, prefixed (helper-found: each
    # was printed twice, once bare by logging's last resort); the level is put back after
    store_log = logging.getLogger("esper.kernels.store")
    level = store_log.level
    store_log.setLevel(logging.ERROR)
    try:
        lines = run(parse(argv))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - a CLI says what went wrong in one line
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2
    finally:
        store_log.setLevel(level)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
