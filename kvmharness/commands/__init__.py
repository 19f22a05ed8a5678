"""The commands behind cli.py, one module per command: `add_arguments(p)`
declares the command's arguments beside `main(args)`, its handler, which
returns an exit status; cli.COMMANDS lists each command's name, module and
--help line.  Arguments that several commands take are in args.py;
measuring.py builds their VMs.

cli.py imports only the module of the command being run, and it does so to
parse that command's arguments (its --help, its usage errors too), so at
module level these modules import only the standard library's light
modules and the cross-cutting ones (errors, units, patterns, args.py); each
handler imports the layers below it (numpy, the native extension, the KVM
layer) when its command runs.  tests/test_cli_startup.py checks both.
"""
