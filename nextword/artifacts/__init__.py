"""What crosses a stage boundary, one module per artifact: its type, file names and format version."""
