"""What the stack does for a demo or a test on one machine: the closed loop
(`scenarios.loop`, `edgeloop loop`), a simulated fleet against the stack's own fleet
server (`scenarios.fleet`, `edgeloop fleet simulate`) and a simulated labelling team
(`scenarios.labelling`)."""
