"""Backends apply the scaler's decisions: local processes (workers, gateways behind nginx) or Kubernetes.

Each is a pool the autoscaler drives with the same four calls:
`target()` how many instances it keeps, `scale_to(n)`, `supervise()` (replace what crashed; returns
how many it replaced) and `describe()` (a JSON-able picture for the health endpoint), plus `shutdown()`.
"""

from typing import Protocol


class Pool(Protocol):
    name: str

    def target(self) -> int: ...

    def scale_to(self, target: int) -> None: ...

    def supervise(self) -> int: ...

    def describe(self) -> dict: ...

    def shutdown(self) -> None: ...
