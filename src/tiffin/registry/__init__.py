"""The registry: applied definitions and materialization state."""
from tiffin.registry.registry import Diff, Registry, Snapshot

__all__ = ["Diff", "Registry", "Snapshot"]
