"""Where events go: a JSONL file, the console, and a W&B run (offline unless the user says online)."""

from __future__ import annotations

import json
import logging
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


def event_record(event: EventBase) -> dict[str, Any]:
    return event.model_dump(mode="json", by_alias=True)


class JsonlSink:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")

    def write(self, events: list[EventBase]) -> None:
        self._file.write("".join(json.dumps(event_record(e)) + "\n" for e in events))
        self._file.flush()

    def close(self, record: RunRecord) -> None:
        self._file.close()


class ConsoleSink:
    """Prints adaptations as they happen, above the progress bar."""

    def write(self, events: list[EventBase]) -> None:
        from tqdm import tqdm

        for e in events:
            if isinstance(e, Adaptation):
                tqdm.write(
                    f"[epoch {e.epoch:>3}] {e.slot}: {e.from_state.value} -> {e.to_state.value}"
                    f" ({e.blueprint or '-'}) {e.reason}"
                )

    def close(self, record: RunRecord) -> None:
        return None


log = logging.getLogger(__name__)
WandbMode = Literal["offline", "online", "disabled"]
RUN_ID_WAIT_S = 60.0
"""How long a resumed run waits for a killed run's W&B service to release the run id."""
DECISION_COLUMNS: list[str | int] = [
    "epoch",
    "policy",
    "action",
    "slot",
    "blueprint",
    "probabilities",
    "reason",
]
ADAPTATION_COLUMNS: list[str | int] = ["epoch", "step", "slot", "blueprint", "from", "to", "reason"]


class WandbSink:
    """One W&B run per job; metrics logged once per epoch, tables and latencies at the end."""

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
            "dir": str(run_dir),
            "config": config,
            "group": group,
            "job_type": job_type,
            "name": name,
            "tags": list(tags or []),
            "id": run_id,
            "resume": "allow" if run_id else None,
            "reinit": "finish_previous",
            "settings": wandb.Settings(console="off", x_disable_stats=True, quiet=True),
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
        self.run_dir = str(Path(self.run.dir).parent)
        self.run_id = self.run.id
        self._adaptation_count = 0
        self._decisions: list[list[Any]] = []

    def write(self, events: list[EventBase]) -> None:
        row: dict[str, Any] = {}
        for e in events:
            if isinstance(e, EpochEnded):
                row.update(e.metrics)
                row["epoch"] = e.epoch
            elif isinstance(e, Adaptation):
                self._adaptation_count += 1
                row["adaptations/count"] = self._adaptation_count
            elif isinstance(e, KernelLatency):
                row[f"latency_us_p50/{e.slot}"] = e.latency_us_p50
                row[f"latency_us_p95/{e.slot}"] = e.latency_us_p95
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
                    for key, p in (d.probabilities or {}).items():
                        row[f"policy/p_{key}"] = p
            elif isinstance(e, KernelLoaded):
                row[f"kernel_compile_s/{e.slot}"] = e.compile_s
        if row:
            self.run.log(row)

    def catch_up(self, previous_run_dir: Path, upto_epoch: int) -> int:
        """Log the epochs up to `upto_epoch` that the interrupted run's events.jsonl has and its
        W&B files lack (a killed process loses what W&B had not yet written). Returns how many
        epochs were replayed."""
        from esper.events.wandb_file import RunFileError, read_run

        try:
            logged = {row.get("epoch") for row in read_run(previous_run_dir / "wandb").history}
        except (RunFileError, OSError):
            logged = set()
        events = previous_run_dir / "events.jsonl"
        if not events.is_file():
            return 0
        replayed = 0
        with events.open(encoding="utf-8") as handle:
            for line in handle:
                event = json.loads(line)
                epoch = event.get("epoch")
                if event.get("kind") != "epoch_ended" or epoch > upto_epoch or epoch in logged:
                    continue
                self.run.log({**event["metrics"], "epoch": epoch})
                logged.add(epoch)
                replayed += 1
        return replayed

    def close(self, record: RunRecord) -> None:
        rows = [
            [
                a.epoch,
                a.step,
                a.slot,
                a.blueprint or "",
                a.from_state.value,
                a.to_state.value,
                a.reason,
            ]
            for a in record.adaptations
        ]
        table = self._wandb.Table(columns=ADAPTATION_COLUMNS, data=rows)
        # Bound to the run first, the table is written with the run's files; unbound, W&B also
        # wraps it in an artifact whose temporary directory it never cleans up (a
        # ResourceWarning on every exit).
        table.bind_to_run(self.run, "adaptations", self.run.step)
        decisions = self._wandb.Table(columns=DECISION_COLUMNS, data=self._decisions)
        decisions.bind_to_run(self.run, "decisions", self.run.step)
        self.run.log({"adaptations": table, "decisions": decisions})
        library = record.kernel_library.model_dump(exclude={"quarantined"}, exclude_none=True)
        for section, values in (
            ("metrics", record.metrics),
            ("params", record.params),
            ("flops_per_sample", record.flops_per_sample),
            ("kernel_library", library),
        ):
            for key, value in values.items():
                self.run.summary[f"{section}/{key}"] = value
        for k in record.kernels:
            prefix = f"kernels/{k.slot}/{k.blueprint}"
            self.run.summary[f"{prefix}/kernel_id"] = k.kernel_id
            for key in ("latency_us_p50", "latency_us_p95", "compile_s"):
                self.run.summary[f"{prefix}/{key}"] = getattr(k, key)
            for key in ("train_latency_us_p50", "train_latency_us_p95"):
                if getattr(k, key) is not None:
                    self.run.summary[f"{prefix}/{key}"] = getattr(k, key)
        self.run.summary["status"] = record.status
        self.run.finish(exit_code=0 if record.status in ("completed", "stopped") else 1)
