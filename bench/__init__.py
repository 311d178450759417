"""bertx.bench: the harness behind `bertx bench` (side-by-side speed, memory and accuracy)."""
