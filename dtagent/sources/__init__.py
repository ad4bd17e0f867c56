"""Platform sources: the only code that touches the OS, and their replay twins."""
