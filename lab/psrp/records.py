"""Error records: `lab.commands.ErrorSpec` -> psrpcore `ErrorRecord`, as pypsrp reads them back.

pypsrp's ErrorRecord takes `fq_error` from FullyQualifiedErrorId, `category` (an int) from
ErrorCategory_Category, `activity`, `reason`, `target_name`, `target_type` from ErrorCategory_*, `message` from
ErrorCategory_Message, and `exception` from the serialized exception (its type chain and adapted
Message / HResult). psrpcore writes ErrorCategory_Message as `str(CategoryInfo)`, whose format lacks the colon
PowerShell prints ("NotSpecified: (:) [Start-VM], VirtualizationException"), so the category info used here
renders the exact `ErrorSpec.category_message` text.
"""

from __future__ import annotations

from typing import Any

from psrpcore.types import (
    ErrorCategory,
    ErrorCategoryInfo,
    ErrorRecord,
    NETException,
    add_note_property,
)

from lab.commands import ErrorCategory as CommandErrorCategory
from lab.commands import ErrorSpec

RUNTIME_EXCEPTION_TYPES = (
    "System.Management.Automation.RuntimeException",
    "System.SystemException",
    "System.Exception",
    "System.Object",
)
RUNTIME_EXCEPTION_HRESULT = -2146233087  # 0x80131501 COR_E_SYSTEM, RuntimeException's HResult


class _CategoryInfo(ErrorCategoryInfo):
    """ErrorCategoryInfo whose string form is fixed to PowerShell's CategoryInfo.ToString() text."""

    def __init__(self, message: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._message = message

    def __str__(self) -> str:
        return self._message


def exception_object(
    message: str,
    type_names: tuple[str, ...],
    hresult: int,
    extra_properties: tuple[tuple[str, Any], ...] = (),
) -> NETException:
    """A serialized .NET exception with the given type chain (most derived first)."""
    exception = NETException(Message=message, HResult=hresult)
    names = list(type_names) or ["System.Exception"]
    if names[-1] != "System.Object":
        names.append("System.Object")
    exception.PSObject.type_names = names
    for name, value in extra_properties:
        add_note_property(exception, name, value)
    return exception


def error_record(spec: ErrorSpec) -> ErrorRecord:
    """The ErrorRecord a Windows host would send for `spec`."""
    category_info = _CategoryInfo(
        spec.category_message,
        Category=ErrorCategory(int(spec.category)),
        Activity=spec.activity,
        Reason=spec.reason,
        TargetName=spec.target_name,
        TargetType=spec.target_type,
    )
    return ErrorRecord(
        Exception=exception_object(spec.message, spec.exception_types, spec.hresult, spec.exception_properties),
        CategoryInfo=category_info,
        TargetObject=spec.target_object,
        FullyQualifiedErrorId=spec.fully_qualified_error_id,
    )


def runtime_error_spec(message: str, activity: str = "") -> ErrorSpec:
    """The ErrorSpec of a generic RuntimeException (an unexpected failure inside the lab host)."""
    return ErrorSpec(
        message=message,
        fully_qualified_error_id="RuntimeException",
        category=CommandErrorCategory.NotSpecified,
        activity=activity,
        exception_types=RUNTIME_EXCEPTION_TYPES,
        hresult=RUNTIME_EXCEPTION_HRESULT,
    )
