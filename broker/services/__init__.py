"""Use cases: orchestrate domain rules over storage; called by the API and the CLI."""
