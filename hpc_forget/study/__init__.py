"""What to run: the methods table, language orders, the typed config, planning into tasks, what
identifies a run, and the 52 languages. Imports only the foundation (errors, files) and, lazily,
``data`` for the label map; never torch."""
