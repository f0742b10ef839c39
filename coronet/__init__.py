"""What every layer shares and nothing heavy: the user-facing errors (`coronet.errors`), atomic
writes and hashing (`coronet.files`) and the bundle format as its readers see it
(`coronet.bundle`). It imports no torch, so a lab host with phones needs neither torch nor
litert-torch to run the store, service, agent, runner, parsers and report."""
