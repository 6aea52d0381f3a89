"""Typed in-process event bus (Oona) and its sinks."""

from esper.events.bus import EventBus, Sink
from esper.events.sinks import ConsoleSink, JsonlSink
from esper.events.wandb_sink import WandbSink

__all__ = ["ConsoleSink", "EventBus", "JsonlSink", "Sink", "WandbSink"]
