"""The lab's PSRP engine: runspace pools and pipelines on psrpcore's server classes."""

from lab.psrp import speedups
from lab.psrp.engine import PoolShell, ReceiveResult, ShellClosedError, UnknownPipelineError, payload_budget
from lab.psrp.pipeline import PipelineRun, PipelineStoppedError, parse_commands, parse_statements, stops_batch
from lab.psrp.records import error_record, runtime_error_spec

speedups.install()

__all__ = [
    "PipelineRun",
    "PipelineStoppedError",
    "PoolShell",
    "ReceiveResult",
    "ShellClosedError",
    "UnknownPipelineError",
    "error_record",
    "parse_commands",
    "parse_statements",
    "payload_budget",
    "runtime_error_spec",
    "stops_batch",
]
