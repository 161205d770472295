"""Commands run on a workstation: check, promote, fleet plan, scaffold."""
