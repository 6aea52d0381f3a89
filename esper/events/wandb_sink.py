"""A W&B run per job (offline unless the user says online), logging the keys of
`esper.events.schema`: one history row per flushed batch (an epoch), the tables and the
summary at the end.

Not essential: W&B failing (init error, disk full, a broken offline directory) is logged once
by the bus, the sink is dropped, and training, events.jsonl and summary.json go on.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Literal, cast, get_args

from esper.contracts import (
    Adaptation,
    DecisionMade,
    EpochEnded,
    EventBase,
    KernelLatency,
    KernelLoaded,
    RunRecord,
)
from esper.events.sinks import event_record
from esper.events.tables import (
    ADAPTATION_COLUMNS,
    TIMELINE_COLUMNS,
    adaptation_rows,
    flatten,
    timeline_rows,
)
from esper.logfiles import guard_log_files

log = logging.getLogger(__name__)
WandbMode = Literal["offline", "online", "disabled"]
RUN_ID_WAIT_S = 60.0
"""How long a resumed run waits for a killed run's W&B service to release the run id."""
VERIFY_WAIT_S = 5.0
"""How long a finished run waits for W&B's service to write its run file out."""
DECISION_COLUMNS: list[str | int] = [
    "epoch",
    "policy",
    "action",
    "slot",
    "blueprint",
    "probabilities",
    "reason",
]
OPERATION_PREFIX = "op/"
"""A decision's `probabilities` key for one operation's probability (`op/germinate`)."""


def policy_row(probabilities: dict[str, float]) -> dict[str, float]:
    """`policy/p/<operation>` and `policy/entropy` from a decision's operation distribution."""
    ops = {k[len(OPERATION_PREFIX) :]: p for k, p in probabilities.items() if k.startswith("op/")}
    if not ops:
        return {}
    row = {f"policy/p/{op}": p for op, p in ops.items()}
    row["policy/entropy"] = -sum(p * math.log(p) for p in ops.values() if p > 0)
    return row


class WandbSink:
    """One W&B run per job. `config` is the resolved Hydra config; `group` (the sweep),
    `job_type` (the policy) and `tags` (dataset, model, policy) line runs up."""

    essential = False

    def __init__(
        self,
        run_dir: str | Path,
        config: dict[str, Any],
        project: str = "esper",
        entity: str | None = None,
        mode: str = "offline",
        group: str | None = None,
        job_type: str | None = None,
        name: str | None = None,
        tags: list[str] | None = None,
        run_id: str | None = None,
        dir: str | None = None,
        silent: bool = False,
    ) -> None:
        import wandb

        if mode not in get_args(WandbMode):
            raise ValueError(
                f"logger.mode={mode!r} is not allowed; allowed: {', '.join(get_args(WandbMode))}"
            )
        self._wandb = wandb
        self.mode = mode
        options: dict[str, Any] = {
            "project": project,
            "entity": entity,
            "mode": cast(WandbMode, mode),
            "dir": str(dir or run_dir),
            "config": config,
            "group": group,
            "job_type": job_type,
            "name": name,
            "tags": list(tags or []),
            "id": run_id,
            "resume": "allow" if run_id else None,
            "reinit": "finish_previous",
            "settings": wandb.Settings(
                console="off", x_disable_stats=True, quiet=True, silent=silent
            ),
        }
        deadline = time.monotonic() + RUN_ID_WAIT_S
        while True:
            try:
                self.run = wandb.init(**options)
                break
            except Exception as exc:  # noqa: BLE001 - only the "in use" case is retried
                if "is in use" not in str(exc) or time.monotonic() > deadline:
                    raise
                # a killed run's W&B service still holds the id it is resumed under; it
                # lets go once it notices its process is gone
                log.info("W&B run %s still held by a previous process; waiting", run_id)
                time.sleep(1.0)
        guard_log_files()  # W&B's debug logs, added by its init
        self.run_dir = str(Path(self.run.dir).parent)
        self.run_id = self.run.id
        self.fallback: str | None = None
        """Set when W&B wrote somewhere other than asked (it falls back to a temporary
        directory when the one given cannot be written)."""
        wanted = Path(dir or run_dir).resolve()
        if wanted not in Path(self.run_dir).resolve().parents:
            self.fallback = f"W&B could not write under {wanted}; its files are in {self.run_dir}"
            log.warning("logger: %s", self.fallback)
        self._rows = 0
        self._adaptations: list[dict[str, Any]] = []
        self._decisions: list[list[Any]] = []
        self._val: dict[int, float] = {}
        self._slots: list[str] = []
        self._end = (0, 0)

    def write(self, events: list[EventBase]) -> None:
        row: dict[str, Any] = {}
        for e in events:
            if isinstance(e, EpochEnded):
                row.update(e.metrics)
                row["epoch"] = e.epoch
                self._note_epoch(e)
            elif isinstance(e, Adaptation):
                self._adaptations.append(event_record(e))
                row["seeds/adaptations"] = len(self._adaptations)
            elif isinstance(e, KernelLoaded):
                prefix = f"kernel/{e.blueprint}"
                row[f"{prefix}/latency_us_p50"] = e.latency_us_p50
                row[f"{prefix}/latency_us_p95"] = e.latency_us_p95
                row[f"{prefix}/compile_s"] = e.compile_s
            elif isinstance(e, KernelLatency):
                prefix = f"kernel/{e.blueprint or e.slot}"
                row[f"{prefix}/train_latency_us_p50"] = e.latency_us_p50
                row[f"{prefix}/train_latency_us_p95"] = e.latency_us_p95
            elif isinstance(e, DecisionMade):
                for d in e.decisions:
                    self._decisions.append(
                        [
                            e.epoch,
                            e.policy,
                            d.action,
                            d.slot or "",
                            d.blueprint or "",
                            json.dumps(d.probabilities or {}),
                            d.reason,
                        ]
                    )
                    row.update(policy_row(d.probabilities or {}))
        if row:
            self._log(row)

    def _log(self, row: dict[str, Any]) -> None:
        self.run.log(row)
        self._rows += 1

    def _note_epoch(self, e: EpochEnded) -> None:
        if "val/accuracy" in e.metrics:
            self._val[e.epoch] = e.metrics["val/accuracy"]
        for key in e.metrics:
            if key.startswith("seeds/") and key.endswith("/state"):
                slot = key[len("seeds/") : -len("/state")]
                if slot not in self._slots:
                    self._slots.append(slot)
        self._end = (e.epoch + 1, e.step)

    def catch_up(self, previous_run_dir: Path, upto_epoch: int) -> int:
        """Log the epochs up to `upto_epoch` that the interrupted run's events.jsonl has and its
        W&B files lack (a killed process loses what W&B had not yet written). Returns how many
        epochs were replayed."""
        from esper.events.wandb_file import RunFileError, read_run

        try:
            rows = read_run(previous_run_dir / "wandb", self.run_id).history
            logged = {row.get("epoch") for row in rows}
        except (RunFileError, OSError):
            logged = set()
        events = previous_run_dir / "events.jsonl"
        if not events.is_file():
            return 0
        replayed = 0
        with events.open(encoding="utf-8") as handle:
            for line in handle:
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:  # a line a full disk or a kill cut short
                    continue
                kind, epoch = event.get("kind"), event.get("epoch")
                if kind == "adaptation" and epoch <= upto_epoch:
                    self._adaptations.append(event)
                if kind != "epoch_ended" or epoch > upto_epoch:
                    continue
                self._note_epoch(EpochEnded.model_validate(event))
                if epoch in logged:
                    continue
                self._log({**event["metrics"], "epoch": epoch})
                logged.add(epoch)
                replayed += 1
        return replayed

    def close(self, record: RunRecord) -> None:
        try:
            self._close(record)
        except OSError as exc:
            if exc.filename is not None:
                raise
            # a full disk as W&B copies the tables in: its error names no file
            raise OSError(
                exc.errno, f"{exc.strerror or exc} (writing W&B's files in {self.run_dir})"
            ) from None

    def _close(self, record: RunRecord) -> None:
        final: dict[str, Any] = {}
        for split in ("test",):
            for name in ("loss", "accuracy"):
                if f"{split}_{name}" in record.metrics:
                    final[f"{split}/{name}"] = record.metrics[f"{split}_{name}"]
        if record.flops_per_sample:
            final["flops/forward_host"] = record.flops_per_sample.get("host", 0)
            final["flops/forward_total"] = record.flops_per_sample.get("total", 0)
        end_epoch, end_step = self._end
        tables = {
            "adaptations": (ADAPTATION_COLUMNS, adaptation_rows(self._adaptations, self._val)),
            "seed_timeline": (
                TIMELINE_COLUMNS,
                timeline_rows(self._adaptations, self._slots, end_epoch, end_step),
            ),
            "decisions": (DECISION_COLUMNS, self._decisions),
        }
        for name, (columns, rows) in tables.items():
            table = self._wandb.Table(columns=columns, data=rows)
            # Bound to the run first, the table is written with the run's files; unbound, W&B
            # also wraps it in an artifact whose temporary directory it never cleans up (a
            # ResourceWarning on every exit).
            table.bind_to_run(self.run, name, self.run.step)
            final[name] = table
        self._log(final)
        summary = record.model_dump(mode="json", exclude={"kernels", "adaptations"})
        for key, value in flatten(summary).items():
            self.run.summary[key] = value
        for k in record.kernels:
            prefix = f"kernels/{k.slot}/{k.blueprint}"
            for key, value in k.model_dump(exclude={"slot", "blueprint"}).items():
                if value is not None and key != "characterisation":
                    self.run.summary[f"{prefix}/{key}"] = value
        self.run.finish(exit_code=0 if record.status in ("completed", "stopped") else 1)
        if self.mode != "disabled":
            self.verify()

    def verify(self, wait_s: float = VERIFY_WAIT_S) -> None:
        """Read this process's run file back: W&B's service does not tell its client when a
        write fails (a full disk), so a run file that lacks rows or its exit record is found
        here and reported as this sink's failure, instead of passing for a complete run.

        `run.finish()` can return before the service has written the file out (found by CI
        on a loaded machine: `0 of 9 rows, no exit record`, then a torn last record when the
        test read it): a file not yet whole is read again until `wait_s` has passed."""
        from esper.events.wandb_file import RunFileError, read_run

        path = Path(self.run_dir) / f"run-{self.run_id}.wandb"
        deadline = time.monotonic() + wait_s
        while True:
            try:
                run = read_run(path)
                problem = None
            except (RunFileError, OSError) as exc:
                problem = f"W&B run file {path} unreadable: {exc}"
            else:
                if run.exit_code is None or len(run.history) < self._rows:
                    problem = (
                        f"W&B run file {path} is incomplete ({len(run.history)} of "
                        f"{self._rows} rows, {'an' if run.exit_code is not None else 'no'} exit "
                        "record): disk full?"
                    )
            if problem is None:
                return
            if time.monotonic() >= deadline:
                raise OSError(problem)
            time.sleep(0.1)
