"""The HDF5 results store: one file per step, the reader, the consolidated file, the
filesystem self-test. Imports only the foundation (errors, files)."""
