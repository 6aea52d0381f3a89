"""Inspect and tidy a kernel library, local or S3.

    python -m esper.kernels list  [--root DIR | --bucket B [--prefix P] [--endpoint-url U]]
    python -m esper.kernels tidy  [--quarantined] [--unused-days N] [--dry-run] [store options]

Without store options the local default (ESPER_KERNEL_STORE or the user cache) is used.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

from esper.kernels.s3_store import S3Store
from esper.kernels.store import KernelStore, LocalStore


def open_store(args: argparse.Namespace) -> KernelStore:
    if args.bucket:
        return S3Store(
            args.bucket, prefix=args.prefix, region=args.region, endpoint_url=args.endpoint_url
        )
    return LocalStore(args.root or os.environ.get("ESPER_KERNEL_STORE") or None)


def list_kernels(store: KernelStore) -> list[str]:
    rows = [
        f"{'kernel':<14} {'blueprint':<16} {'shape':<12} {'params':>8} {'p50 us':>8} "
        f"{'p95 us':>8} {'bytes':>9} {'last used':<19}"
    ]
    for k in store.list():
        m = k.metadata
        used = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(k.last_used))
        rows.append(
            f"{m.kernel_id[:12]:<14} {m.spec.blueprint:<16} {str(list(m.spec.input_shape)):<12} "
            f"{m.param_count:>8} {m.latency_us_p50:>8.1f} {m.latency_us_p95:>8.1f} "
            f"{k.size:>9} {used:<19}"
        )
    quarantined = store.quarantined()
    rows.append(f"{len(rows) - 1} kernels in {store.describe()}; {len(quarantined)} quarantined")
    return rows


def tidy(
    store: KernelStore, quarantined: bool, unused_days: float | None, dry_run: bool
) -> list[str]:
    report = []
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
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m esper.kernels",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=["list", "tidy"])
    parser.add_argument("--root", help="local store directory")
    parser.add_argument("--bucket", help="S3 bucket (selects the S3 store)")
    parser.add_argument("--prefix", default="esper/kernels")
    parser.add_argument("--region", default=os.environ.get("AWS_DEFAULT_REGION"))
    parser.add_argument("--endpoint-url", default=os.environ.get("ESPER_S3_ENDPOINT_URL"))
    parser.add_argument("--quarantined", action="store_true", help="tidy: remove quarantined")
    parser.add_argument("--unused-days", type=float, help="tidy: remove kernels unused this long")
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "tidy" and not args.quarantined and args.unused_days is None:
        parser.error("tidy needs --quarantined and/or --unused-days N")
    store = open_store(args)
    lines = (
        list_kernels(store)
        if args.command == "list"
        else tidy(store, args.quarantined, args.unused_days, args.dry_run)
    )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
