from vigo.cli.commands import entry

entry()
