"""Parameter binding as PowerShell does it: names, prefixes, aliases, positions, sets, conversions, records."""

from __future__ import annotations

from lab.commands import CommandSpec, ErrorCategory, ParameterSpec
from tests.lab.test_cmdlets_support import SWITCH, Lab, cmd, prop

BINDING = "System.Management.Automation.ParameterBindingException"


def test_unknown_parameter_is_named_parameter_not_found() -> None:
    spec, io = Lab().fail(cmd("Get-VM", Bogus="x"))
    assert spec.message == "A parameter cannot be found that matches parameter name 'Bogus'."
    assert spec.fully_qualified_error_id == "NamedParameterNotFound,Microsoft.HyperV.PowerShell.Commands.GetVM"
    assert spec.category == ErrorCategory.InvalidArgument
    assert spec.exception_types[0] == BINDING
    assert spec.category_message == "InvalidArgument: (:) [Get-VM], ParameterBindingException"
    assert io.output == []


def test_names_ignore_case_and_prefixes_bind() -> None:
    lab = Lab()
    io = lab.run(cmd("get-vm", nAmE="web01"))
    assert [prop(o, "Name") for o in io.output] == ["web01"]
    io = lab.run(cmd("Set-VMHost", MaximumVirtualMachine=5))  # unique prefix
    assert lab.world.hosts["HV01"].live_migration.max_vm_migrations == 5


def test_ambiguous_prefix_lists_the_matches() -> None:
    spec, _ = Lab().fail(cmd("Get-VM", C="x"))
    assert spec.fully_qualified_error_id == "AmbiguousParameter,Microsoft.HyperV.PowerShell.Commands.GetVM"
    assert spec.message == (
        "Parameter cannot be processed because the parameter name 'C' is ambiguous. "
        "Possible matches include: -ClusterObject -ComputerName -Credential -CimSession."
    )


def test_alias_binds_the_parameter() -> None:
    io = Lab().run(cmd("Get-VM", VMName="web01"))
    assert [prop(o, "Name") for o in io.output] == ["web01"]


def test_positional_arguments_fill_positions_in_order() -> None:
    lab = Lab()
    lab.run(cmd("Add-VMMigrationNetwork", "192.168.50.0/24", 9))
    nets = {n.subnet: n.priority for n in lab.world.hosts["HV01"].live_migration.networks}
    assert nets["192.168.50.0/24"] == 9


def test_extra_positional_argument_is_refused() -> None:
    spec, _ = Lab().fail(cmd("Get-VMHost", "extra"))
    assert spec.fully_qualified_error_id == "PositionalParameterNotFound,Microsoft.HyperV.PowerShell.Commands.GetVMHost"
    assert spec.message == "A positional parameter cannot be found that accepts argument 'extra'."


def test_missing_mandatory_parameter() -> None:
    spec, _ = Lab().fail(cmd("Move-VM", Name="web01"))
    assert spec.fully_qualified_error_id == "MissingMandatoryParameter,Microsoft.HyperV.PowerShell.Commands.MoveVM"
    assert (
        spec.message == "Cannot process command because of one or more missing mandatory parameters: DestinationHost."
    )


def test_enum_conversion_lists_the_enumerator_names() -> None:
    spec, _ = Lab().fail(cmd("Set-VMHost", VirtualMachineMigrationAuthenticationType="Foo"))
    assert spec.fully_qualified_error_id == (
        "CannotConvertArgumentNoMessage,Microsoft.HyperV.PowerShell.Commands.SetVMHost"
    )
    assert spec.message == (
        "Cannot bind parameter 'VirtualMachineMigrationAuthenticationType'. Cannot convert value \"Foo\" to type "
        '"Microsoft.HyperV.PowerShell.MigrationAuthenticationType". Error: "Unable to match the identifier name Foo '
        "to a valid enumerator name. Specify one of the following enumerator names and try again:\r\n"
        'CredSSP, Kerberos"'
    )
    assert spec.category == ErrorCategory.InvalidArgument


def test_enum_names_ignore_case() -> None:
    lab = Lab()
    lab.run(cmd("Set-VMHost", VirtualMachineMigrationPerformanceOption="smb"))
    assert lab.world.hosts["HV01"].live_migration.performance.name == "SMB"


def test_uint32_conversion_errors() -> None:
    spec, _ = Lab().fail(cmd("Set-VMHost", MaximumStorageMigrations=-1))
    assert spec.message.endswith('Error: "Value was either too large or too small for a UInt32."')
    spec, _ = Lab().fail(cmd("Set-VMHost", MaximumStorageMigrations="many"))
    assert spec.message == (
        'Cannot bind parameter \'MaximumStorageMigrations\'. Cannot convert value "many" to type "System.UInt32". '
        'Error: "Input string was not in a correct format."'
    )


def test_bool_parameter_refuses_a_string() -> None:
    spec, _ = Lab().fail(cmd("Set-VMHost", UseAnyNetworkForMigration="yes"))
    assert spec.fully_qualified_error_id.startswith("ParameterArgumentTransformationError,")
    assert spec.category == ErrorCategory.InvalidData


def test_validate_not_null_or_empty() -> None:
    spec, _ = Lab().fail(cmd("Get-VMNetworkAdapter", VMName=""))
    assert spec.fully_qualified_error_id == (
        "ParameterArgumentValidationError,Microsoft.HyperV.PowerShell.Commands.GetVMNetworkAdapter"
    )
    assert spec.message == (
        "Cannot validate argument on parameter 'VMName'. The argument is null or empty. Provide an argument that is "
        "not null or empty, and then try the command again."
    )
    assert spec.category == ErrorCategory.InvalidData
    assert spec.reason == "ParameterBindingValidationException"


def test_parameter_sets_must_resolve() -> None:
    vhds = [{"SourceFilePath": r"D:\Hyper-V\web01\web01.vhdx", "DestinationFilePath": r"D:\VMs\web01.vhdx"}]
    spec, _ = Lab().fail(cmd("Move-VM", Name="web01", DestinationHost="HV02", IncludeStorage=SWITCH, Vhds=vhds))
    assert spec.fully_qualified_error_id == "AmbiguousParameterSet,Microsoft.HyperV.PowerShell.Commands.MoveVM"


def test_parameter_specified_twice() -> None:
    command = CommandSpec("Get-VM", (ParameterSpec("Name", "a"), ParameterSpec("VMName", "b")))
    spec, _ = Lab().fail(command)
    assert spec.fully_qualified_error_id.startswith("ParameterAlreadyBound,")


def test_error_action_is_a_common_parameter() -> None:
    lab = Lab()
    io = lab.run(cmd("Get-VM", Name="ghost", ErrorAction="SilentlyContinue"))
    assert io.errors == []
    assert io.output == []
    spec, _ = lab.fail(cmd("Get-VM", Name="ghost", ErrorAction="Stop"))
    assert spec.fully_qualified_error_id == "InvalidParameter,Microsoft.HyperV.PowerShell.Commands.GetVM"
    spec, _ = lab.fail(cmd("Get-VM", ErrorAction="Sometimes"))
    assert spec.fully_qualified_error_id == "CannotConvertArgumentNoMessage,Microsoft.HyperV.PowerShell.Commands.GetVM"


def test_binding_errors_stop_the_pipeline_before_anything_runs() -> None:
    lab = Lab()
    spec, _ = lab.fail(cmd("Set-VMHost", MaximumStorageMigrations=7), cmd("Select-Object", Bogus=1))
    assert spec.fully_qualified_error_id == ("NamedParameterNotFound,Microsoft.PowerShell.Commands.SelectObjectCommand")
    assert lab.world.hosts["HV01"].live_migration.max_storage_migrations == 2
