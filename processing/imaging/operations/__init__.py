"""Image operations: pure functions on PIL images, with their parameter models, and the registry of them."""

from processing.imaging.operations.base import Operation, OperationResult, OutputLimits, OutputOptions
from processing.imaging.operations.registry import OPERATIONS, get_operation

__all__ = ["OPERATIONS", "Operation", "OperationResult", "OutputLimits", "OutputOptions", "get_operation"]
