"""`python -m harness.simulator`: serve until SIGINT or SIGTERM."""

from harness.simulator.app import main

main()
