"""`python -m esper.report <sweep dir> [...] [--out DIR] [--against POLICY]` or `python -m esper.report
<entity>/<project>/<group> [--dry-run]`; see `esper.report`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from esper.report import load_runs, table
from esper.report.paired import METRICS, paired_table
from esper.report.runs import NoRuns


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m esper.report", description=__doc__)
    parser.add_argument(
        "targets", nargs="+", help="sweep or run directories, or one W&B entity/project/group"
    )
    parser.add_argument(
        "--out", type=Path, help="where report.html and the PNGs go (default: <first dir>/report)"
    )
    parser.add_argument("--no-html", action="store_true", help="print the table only")
    parser.add_argument(
        "--against",
        metavar="POLICY",
        help="also print each configuration against this policy's runs, paired by task and "
        "seed; settings that tell runs of one policy apart follow its name, as key=value on "
        "its configuration: 'heuristic policy.patience=1'",
    )
    parser.add_argument(
        "--metric",
        choices=METRICS,
        default=None,
        help="what --against compares (default test_accuracy; val_accuracy when choosing "
        "between candidates)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="online: build the W&B Report, do not save it"
    )
    args = parser.parse_args(argv)
    if not all(t.strip() for t in args.targets):  # Path("") is the current directory
        parser.error("an empty target: name sweep or run directories")
    if args.metric is not None and args.against is None:
        parser.error(f"--metric {args.metric}: it is what --against compares; add --against POLICY")
    paths = [Path(t) for t in args.targets]
    if all(p.exists() for p in paths):
        files = [str(p) for p in paths if not p.is_dir()]
        if files:
            parser.error(f"{', '.join(files)}: not a directory (name sweep or run directories)")
        if args.dry_run:  # helper-found: taken, and report.html written all the same
            parser.error(
                "--dry-run: builds a W&B Report without saving it (an entity/project/group); "
                "a local report only writes files (--no-html: the table alone)"
            )
        try:
            runs = load_runs(paths)
        except NoRuns as exc:  # a directory with no run in it: named like a missing one
            trainings = sorted({str(t.parent) for p in paths for t in p.glob("**/simic.pt")})
            if trainings:  # helper-found: "no readable summary.json" alone
                parser.error(
                    f"{exc}; {', '.join(trainings)} holds a policy training, whose learning "
                    f"curve is python -m esper.simic.curve {trainings[0]}"
                )
            parser.error(str(exc))
        paired = None
        if args.against is not None:  # `--against ""` is a reference left empty, not none
            try:  # before any output: a refused reference prints no half report
                paired = paired_table(runs, args.against, args.metric or "test_accuracy")
            except ValueError as exc:
                parser.error(str(exc))
        print(table(runs))
        if paired is not None:
            print("\n" + paired)
        if not args.no_html:
            from esper.report.html import render

            out = args.out or paths[0] / "report"
            title = f"Esper report: {', '.join(p.name for p in paths)}"
            try:
                print(f"\nreport: {render(runs, out, title)}")
            except OSError as exc:
                parser.error(f"--out {out}: cannot write the report there ({exc.strerror})")
        return
    parts = args.targets[0].split("/")
    looks_like_a_path = (
        args.targets[0].startswith((".", "/", "~"))
        or not all(parts)
        or Path(parts[0]).is_dir()  # outputs/multiruns/typo: a mistyped local path
    )
    if len(args.targets) != 1 or len(parts) != 3 or looks_like_a_path:
        missing = ", ".join(str(p) for p in paths if not p.exists())
        parser.error(f"{missing}: no such directory, nor one W&B entity/project/group")
    try:
        from esper.report.wandb_report import build
    except ImportError:
        parser.error("a W&B Report needs wandb-workspaces: pip install -e '.[reports]'")
    entity, project, group = args.targets[0].split("/")
    report = build(entity, project, group)
    if args.dry_run:
        print(f"W&B Report {report.title!r}: {len(report.blocks)} blocks (not saved: --dry-run)")
        return
    try:
        report.save()
    except Exception as exc:  # noqa: BLE001 - one line: no login, no server, no permission
        print(
            f"esper.report: {args.targets[0]} is no local directory, so it was read as a W&B "
            f"entity/project/group; saving its W&B Report failed: {exc}",
            file=sys.stderr,
        )
        raise SystemExit(1) from None
    print(f"W&B Report saved: {report.url}")


if __name__ == "__main__":
    main()
