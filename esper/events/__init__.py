"""Typed in-process event bus (Oona) and its sinks."""

from esper.events.bus import EventBus, Sink
from esper.events.sinks import ConsoleSink, JsonlSink, WandbSink

__all__ = ["ConsoleSink", "EventBus", "JsonlSink", "Sink", "WandbSink"]
