"""Small helpers shared by every stage: errors, console output, atomic files, devices."""
