"""The `kvmharness` command: the top-level parser (each command's arguments
are declared beside its handler in kvmharness/commands/), and the exit
status of whatever the handler does with them.

Every user mistake and every fault ends in one line on stderr and a non-zero
exit: 2 for bad arguments (argparse's convention), 1 for errors met while
running, 130 / 143 / 129 after SIGINT / SIGTERM / SIGHUP (the VM torn down
first).
"""

import argparse
import importlib
import signal
import sys

from .errors import HarnessError, Signalled, UsageError

# Every command, in the order --help lists them: its name, its module under
# kvmharness/commands/ (whose add_arguments(parser) declares its arguments
# and whose main(args) runs it), and the line --help gives it.  The lines are
# here, not in the modules, so that --help imports no command module.
COMMANDS = (
    ("probe", "probe", "describe this KVM host and calibrate the guest"),
    ("run", "run", "run the guest writer and report writes/s per vCPU"),
    ("calc-dirty-rate", "calc", "measure the guest's dirty page rate, as QEMU's calc-dirty-rate"),
    ("qmp", "qmp", "run the VM and serve QMP (and HMP commands) to QEMU clients"),
    ("bench", "bench", "reproduce the seed's dirty-rate table side by side, with plots"),
    ("predict", "predict", "predict whether pre-copy migration converges, from measured dirty(t)"),
    ("migrate", "migrate", "start a VM with the writer and live-migrate it (source side)"),
    ("migrate-listen", "migrate_listen", "receive a live-migrated VM and resume it (destination side)"),
    ("perf", "perf", "dirty_log_perf_test's numbers: what dirty logging costs, checked against replay"),
    ("qemu-check", "qemu_check", "boot our writer in QEMU and check QEMU's calc-dirty-rate against exact ground "
                                 "truth (and against kvmharness on its own VM)"),
    ("selftest", "selftest", "check that this host's KVM dirty tracking tells the truth (vs replay)"),
    ("watch", "watch", "keep a fleet's migratability current over QMP: one live line per VM"),
    ("exporter", "exporter", "a fleet's migratability as Prometheus metrics"),
)


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one line (argparse prints the usage too)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(argv=None):
    """The command line's parser.  Given argv, only the command it names gets
    its arguments, so a run imports one command module and `--help` none
    (the others stay bare: their names and --help lines); without argv,
    every command gets its arguments (for tests and tools that inspect it)."""
    named = None if argv is None else next((a for a in argv if not a.startswith("-")), "")
    parser = _Parser(
        prog="kvmharness",
        description="Measure how fast a KVM guest dirties its memory, straight on /dev/kvm.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name, line in COMMANDS:
        p = sub.add_parser(name, help=line)
        if named is None or named == name:
            module = importlib.import_module(f"kvmharness.commands.{module_name}")
            module.add_arguments(p)
            p.set_defaults(handler=module.main)
    return parser


def _raise_signalled(signo, frame):
    raise Signalled(signo)


EXIT_SIGNALS = (signal.SIGTERM, signal.SIGHUP)  # SIGINT is Python's KeyboardInterrupt


def main(argv=None):
    """The process's entry point: it owns the signal dispositions.  Once the
    command has finished, a late signal is ignored rather than allowed to
    turn a finished run into one killed on its way out (the soak script
    caught SIGHUP landing between the end of a run and the exit)."""
    for signo in EXIT_SIGNALS:  # first: before this, the signal's default action ends the process
        signal.signal(signo, _raise_signalled)
    argv = sys.argv[1:] if argv is None else argv
    parser = None
    try:
        parser = build_parser(argv)
        args = parser.parse_args(argv)
        return args.handler(args)
    except UsageError as e:
        if parser is None:
            raise
        parser.exit(2, f"kvmharness: error: {e}\n")
    except HarnessError as e:
        print(f"kvmharness: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("kvmharness: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except Signalled as e:
        print(f"kvmharness: {signal.Signals(e.signo).name}, the VM torn down", file=sys.stderr)
        return 128 + e.signo
    finally:
        for signo in (*EXIT_SIGNALS, signal.SIGINT):
            signal.signal(signo, signal.SIG_IGN)


if __name__ == "__main__":
    sys.exit(main())
