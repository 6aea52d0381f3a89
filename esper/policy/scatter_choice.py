"""The measured choice of a scatter backend per reduction, with its on-disk cache.

`ScatterBackends.choose` picks, for each reduction of `esper.policy.scatter`, the faster backend
from a short measurement (forward + backward by default, or forward only; the median of `calls`
timed calls after a warm-up) on the shapes it will run, caches the choice and the figures on
disk, and logs them; `policy.scatter_backend=torch|torch_scatter` fixes the backend instead.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Literal, get_args

import torch
from pydantic import BaseModel, ValidationError

from esper.config import first_line, reason
from esper.policy.scatter import (
    BACKENDS,
    CACHE_FILE,
    CACHE_FORMAT,
    REDUCTIONS,
    SETTING_KEY,
    SETTINGS,
    Backend,
    BackendChoice,
    Passes,
    Reduce,
    Setting,
    scatter,
    torch_scatter_status,
)

# The logger keeps the primitive's module name: the choice was logged there before the split.
log = logging.getLogger("esper.policy.scatter")


class _CacheEntry(BaseModel):
    choice: dict[Reduce, Backend]
    figures_us: dict[Reduce, dict[Backend, float]]
    measured_at: float


class _CacheFile(BaseModel):
    format: Literal[1]
    entries: dict[str, _CacheEntry]


def default_cache_dir() -> Path:
    """`$ESPER_CACHE_DIR`, else `$XDG_CACHE_HOME/esper`, else `~/.cache/esper`."""
    if explicit := os.environ.get("ESPER_CACHE_DIR"):
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "esper"


def bucket(n: int) -> int:
    """The power of two at or above `n` (at least 1): the shapes' cache granularity."""
    return 1 << max(0, int(n) - 1).bit_length()


def check_setting(setting: str) -> tuple[str | None, str]:
    """Refuse an unknown setting, or torch_scatter where it cannot be imported, before a run
    trains (it failed at the first control step); else torch-scatter's (version, status)."""
    if setting not in SETTINGS:
        raise ValueError(f"{SETTING_KEY}={setting!r}: allowed values are {', '.join(SETTINGS)}")
    version, status = torch_scatter_status()
    if setting == "torch_scatter" and version is None:
        raise ValueError(_unusable(status))
    return version, status


def _unusable(status: str) -> str:
    return (
        f"{SETTING_KEY}=torch_scatter, but {status}: install the accel extra "
        f"(`make accel`, i.e. pip install -e '.[accel]'; built with CUDA for a GPU) "
        f"or choose one of {SETTING_KEY}=auto|torch"
    )


class ScatterBackends:
    """Chooses a backend per reduction for a device and a shape; `auto` measures once per
    (device, torch version, torch-scatter version, threads, shapes bucket) and caches on disk.

    `measurements` counts the `choose` calls that measured (the others were fixed or cached).
    """

    def __init__(
        self,
        cache_dir: Path | str | None = None,
        *,
        calls: int = 20,
        warmup: int = 3,
        budget_s: float = 1.0,
    ) -> None:
        self.cache_path = Path(cache_dir or default_cache_dir()) / CACHE_FILE
        self.calls = calls
        self.warmup = warmup
        self.budget_s = budget_s
        """For the whole measurement, a third per reduction: warm-up and timed calls stop early
        once it is spent (after 1 warm-up and 3 timed calls per backend at the least)."""
        self.measurements = 0

    def choose(
        self,
        setting: Setting,
        device: torch.device,
        num_edges: int,
        features: int,
        *,
        passes: Passes = "forward+backward",
        announce: bool = True,
    ) -> BackendChoice:
        """The backend for each reduction on `device` for about `num_edges` x `features`.

        `passes` is what `auto` times: a forward and a backward (training) or the forward
        alone (decisions under `torch.no_grad`). They can disagree: torch-scatter's `max` has a
        slow forward and a cheap backward. `announce`: log the choice (not for scratch parts)."""
        device = torch.device(device)
        version, status = check_setting(setting)
        edges, feats = bucket(num_edges), bucket(features)
        if passes not in get_args(Passes):
            raise ValueError(f"passes={passes!r}: allowed values are {', '.join(get_args(Passes))}")
        key = cache_key(device, version, edges, feats, passes)
        if version is not None and setting != "torch" and (failure := _probe(device)):
            version, status = None, f"torch_scatter {version} does not run on {device} ({failure})"
        if setting == "torch_scatter" and version is None:
            raise ValueError(_unusable(status))
        if setting != "auto" or version is None:
            backend: Backend = "torch" if setting == "auto" else setting
            why = f"{SETTING_KEY}={setting}" + (f"; {status}" if version is None else "")
            result = BackendChoice(
                choice=dict.fromkeys(REDUCTIONS, backend),
                figures_us={},
                source="fixed",
                note=why,
                key=key,
            )
        elif (entry := self._read(key)) is not None:
            result = BackendChoice(
                choice=entry.choice,
                figures_us=entry.figures_us,
                source="cached",
                note=f"{status}; cached in {self.cache_path}",
                key=key,
            )
        else:
            started = time.perf_counter()
            figures = self._measure(device, edges, feats, passes)
            took = time.perf_counter() - started
            self.measurements += 1
            choice = {r: min(BACKENDS, key=figures[r].__getitem__) for r in REDUCTIONS}
            self._write(
                key, _CacheEntry(choice=choice, figures_us=figures, measured_at=time.time())
            )
            result = BackendChoice(
                choice=choice,
                figures_us=figures,
                source="measured",
                note=f"{status}; {edges} edges x {feats} features, {passes}, "
                f"measured in {took:.2f} s",
                key=key,
            )
        if announce:
            log.info("%s", result.summary())
        return result

    # --- measurement -----------------------------------------------------------------------

    def _measure(
        self, device: torch.device, edges: int, features: int, passes: Passes
    ) -> dict[Reduce, dict[Backend, float]]:
        """Median microseconds of `passes`, per reduction and backend, the two
        backends alternating call by call. Uses its own generator: the global RNG (and so a
        run's determinism) is untouched."""
        nodes = max(1, edges // 2)
        gen = torch.Generator().manual_seed(0)
        backward = passes == "forward+backward"
        with torch.inference_mode(False), torch.set_grad_enabled(backward):
            src = torch.randn(edges, features, generator=gen).to(device).requires_grad_(backward)
            index = torch.randint(0, nodes, (edges,), generator=gen).to(device)
            grad = torch.randn(nodes, features, generator=gen).to(device)
            cuda = device.type == "cuda"

            def sync() -> None:
                if cuda:
                    torch.cuda.synchronize(device)

            figures: dict[Reduce, dict[Backend, float]] = {}
            for reduce in REDUCTIONS:

                def step(backend: Backend, reduce: Reduce = reduce) -> float:
                    sync()
                    start = time.perf_counter()
                    out = scatter(src, index, nodes, reduce, backend)
                    if backward:
                        out.backward(grad)
                    sync()
                    src.grad = None
                    return time.perf_counter() - start

                deadline = time.perf_counter() + self.budget_s / len(REDUCTIONS)
                for i in range(max(1, self.warmup)):
                    if i >= 1 and time.perf_counter() > deadline:
                        break
                    for backend in BACKENDS:
                        step(backend)
                times: dict[Backend, list[float]] = {b: [] for b in BACKENDS}
                for i in range(max(3, self.calls)):
                    if i >= 3 and time.perf_counter() > deadline:
                        break
                    for backend in BACKENDS if i % 2 == 0 else BACKENDS[::-1]:
                        times[backend].append(step(backend))
                figures[reduce] = {
                    b: round(statistics.median(t) * 1e6, 3) for b, t in times.items()
                }
        return figures

    # --- the cache file --------------------------------------------------------------------

    def _load(self) -> _CacheFile | None:
        """The cache file's contents; None when absent, unreadable or corrupt (logged)."""
        try:
            text = self.cache_path.read_text()
        except FileNotFoundError:
            return None
        except OSError as err:
            log.warning("scatter backend cache %s unreadable (%s): ignored", self.cache_path, err)
            return None
        try:
            return _CacheFile.model_validate(json.loads(text))
        except (ValueError, ValidationError) as err:
            log.warning(
                "scatter backend cache %s is corrupt (%s): ignored, it will be rewritten",
                self.cache_path,
                reason(err),
            )
            return None

    def _read(self, key: str) -> _CacheEntry | None:
        cache = self._load()
        return None if cache is None else cache.entries.get(key)

    def _write(self, key: str, entry: _CacheEntry) -> None:
        """Merge `entry` into the file, atomically (a temporary file renamed over it): jobs of a
        parallel sweep may write at once; the last one wins, and no reader sees half a file."""
        cache = self._load() or _CacheFile(format=CACHE_FORMAT, entries={})
        entries = {**cache.entries, key: entry}
        payload = _CacheFile(format=CACHE_FORMAT, entries=entries).model_dump_json(indent=1)
        try:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(
                dir=self.cache_path.parent, prefix=".scatter_backends.", suffix=".tmp"
            )
            try:
                with os.fdopen(fd, "w") as f:
                    f.write(payload)
                os.replace(tmp, self.cache_path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as err:
            log.warning(
                "scatter backend cache %s not written (%s): the choice holds for this run only",
                self.cache_path,
                err,
            )


def _probe(device: torch.device) -> str | None:
    """Why torch-scatter cannot run on `device` (a CPU-only build and a GPU), or None."""
    try:
        src = torch.ones(2, 1, device=device)
        index = torch.zeros(2, dtype=torch.long, device=device)
        for reduce in REDUCTIONS:
            scatter(src, index, 1, reduce, "torch_scatter")
    except Exception as err:
        return first_line(err)[:200]
    return None


def cache_key(
    device: torch.device,
    torch_scatter_version: str | None,
    edges: int,
    features: int,
    passes: Passes = "forward+backward",
) -> str:
    """What a measurement depends on: the device (a GPU by name, a CPU by its thread count),
    torch and torch-scatter versions, the shapes bucket and the passes timed."""
    if device.type == "cuda":
        where = f"cuda:{torch.cuda.get_device_name(device)}"
    elif device.type == "cpu":
        where = f"cpu:{torch.get_num_threads()}threads"
    else:
        where = device.type
    return (
        f"{where}|torch={torch.__version__}|torch_scatter={torch_scatter_version or 'absent'}"
        f"|edges={edges}|features={features}|{passes}"
    )
