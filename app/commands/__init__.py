"""The command line: `cli` (the parser and `main`), one module per subcommand, `errors.CliError`."""
